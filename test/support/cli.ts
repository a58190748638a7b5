// The command as users run it: a separate process with an environment the test controls entirely.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../../bin/pg-iam-proxy.js', import.meta.url));

/**
 * No AWS configuration but what the test gives: the machine's files, instance metadata and real STS
 * are out of reach (STS points at a closed loopback port unless the test sets AWS_ENDPOINT_URL_STS).
 */
export function cleanAwsEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_') && !k.startsWith('PG_IAM_PROXY_')));
  return {
    ...clean,
    HOME: home,
    AWS_CONFIG_FILE: `${home}/none`,
    AWS_SHARED_CREDENTIALS_FILE: `${home}/none`,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_ENDPOINT_URL_STS: 'http://127.0.0.1:9',
    ...extra,
  };
}

/** The CLI's arguments for serving the test database on a loopback port of its own, with JSON logs. */
export function serveArgs(db: { endpoint: string; port: number; caFile: string }, ...extra: string[]): string[] {
  const { endpoint, port, caFile } = db;
  return [
    `${endpoint}:${port}`,
    '--listen',
    '127.0.0.1:0',
    '--connect-to',
    `127.0.0.1:${port}`,
    '--ca-file',
    caFile,
    '--log-format',
    'json',
    ...extra,
  ];
}

/** Children still running when the test process ends (a failed assertion skipped their stop) are killed. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface StartedCli {
  readonly child: ChildProcess;
  readonly port: number;
  /** Every JSON log line so far. */
  readonly lines: Array<Record<string, unknown>>;
  readonly exit: Promise<number | null>;
  /** Resolves with the first log line that matches. */
  line(match: (entry: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
}

/**
 * Start the CLI with JSON logs and wait for its first "listening" line. `command`: another executable
 * that is the CLI (the installed package's bin, the single executable), found on env.PATH.
 */
export async function startCli(args: string[], env: NodeJS.ProcessEnv, command?: string): Promise<StartedCli> {
  // The benchmarks measure other Node binaries and flags (a profile: BENCH_NODE_FLAGS=--cpu-prof).
  const node = process.env.BENCH_NODE ?? process.execPath;
  const flags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const child = command
    ? spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(node, [...flags, BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<{ match: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }> = [];
  // 'close', not 'exit': by then every line the child wrote has been read.
  const exit = once(child, 'close').then(([code]) => code as number | null);
  createInterface({ input: child.stderr! }).on('line', (text) => {
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(text) as Record<string, unknown>;
    } catch {
      entry = { msg: `(not JSON) ${text}` };
    }
    lines.push(entry);
    for (const w of waiters.filter((w) => w.match(entry))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(entry);
    }
  });
  const line = (match: (e: Record<string, unknown>) => boolean) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const seen = lines.find(match);
      if (seen) return resolve(seen);
      const waiter = { match, resolve };
      waiters.push(waiter);
      // Only a waiter still waiting hears of the exit; the last lines say why.
      exit.then(
        (code) =>
          waiters.includes(waiter) && reject(new Error(`exited ${code} before the line; last logs: ${JSON.stringify(lines.slice(-20))}`)),
      );
    });
  const listening = await line((e) => e.msg === 'listening');
  return { child, port: Number(String(listening.listen).split(':').at(-1)), lines, exit, line };
}

/** Run the CLI to its end. */
export async function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  child.stdin.end(input ?? '');
  const [code] = await once(child, 'exit');
  return { code: code as number | null, stdout, stderr };
}
