// `pg-iam-proxy run ENDPOINT -- CMD`: the proxy on a private unix socket for the life of one command.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import type { Logger } from 'pino';
import type { Identities } from '../aws/identity.js';
import type { ProxyConfig } from '../config.js';
import { CloudCredentials } from '../clouds/credentials.js';
import { CLOUDS } from '../clouds/names.js';
import { cloudOf } from '../clouds/table.js';
import { Engine } from '../proxy/engine.js';
import { announceAll, engineDeps } from './wiring.js';

export interface RunOptions {
  readonly command: string;
  readonly args: readonly string[];
  /** PGUSER for the command, when given. */
  readonly user: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly log: Logger;
  readonly identities: Identities;
  /** Whether signals like Ctrl-C reach the command from the terminal itself (default: stdin is a TTY). */
  readonly terminal?: boolean;
  /** Pass the AWS credentials in the environment on to the command (--keep-aws-env); default: keep them from it. */
  readonly keepAwsEnv?: boolean;
}

/** Signals passed on to the command. SIGINT and SIGQUIT come from the terminal to both of us. */
const FORWARDED: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'];
const FROM_TERMINAL: readonly NodeJS.Signals[] = ['SIGINT', 'SIGQUIT'];

/** The shell's exit statuses: a command not found, one that cannot be run, and the base of a death by signal. */
const NOT_FOUND = 127;
const CANNOT_RUN = 126;
const SIGNAL_BASE = 128;

/** What a background child the command left behind gets once the command is gone. */
const LEFT_BEHIND_GRACE_MS = 2_000;

/** libpq settings that would send the command somewhere other than the proxy. */
const BYPASS = ['PGHOSTADDR', 'PGSERVICE', 'PGSERVICEFILE', 'PGSSLNEGOTIATION', 'PGREQUIRESSL'];

/**
 * Cloud credentials themselves, as the SDKs read them from the environment, every cloud's. The proxy
 * signs for the command, which needs none of them; an environment is inherited by every process the
 * command starts and shows up in `env` output, crash reports and /proc/PID/environ. What only names or
 * points at a credential (AWS_PROFILE, AWS_REGION, AWS_WEB_IDENTITY_TOKEN_FILE, PG_IAM_PROXY_*) stays: it is
 * no secret, and the files it names are the same user's to read anyway.
 */
const CLOUD_CREDENTIALS: readonly string[] = CLOUDS.flatMap((cloud) => cloudOf(cloud).credentialVariables);

/**
 * Start the proxy, run the command against it, stop the proxy when the command ends. Resolves to the
 * command's exit status (128 + N for a death by signal N; 127 when it cannot be found, 126 when it
 * cannot be run).
 */
export async function runWithProxy(config: ProxyConfig, options: RunOptions): Promise<number> {
  const { log, identities } = options;
  const clouds = new CloudCredentials({ log });
  const proxy = new Engine(config, engineDeps({ identities, clouds, log }));
  try {
    await proxy.listen();
  } catch (err) {
    log.fatal({ err }, `cannot start the proxy: ${(err as Error).message}`);
    return 1;
  }
  // Credentials first: an MFA prompt must not compete with the command for the terminal.
  await announceAll(config, identities, log, clouds);
  const instance = proxy.instances[0]!;
  const socket = instance.socketPath!;
  const withheld = options.keepAwsEnv ? [] : CLOUD_CREDENTIALS.filter((name) => options.env[name] !== undefined);
  if (withheld.length > 0)
    log.debug({ withheld }, "cloud credentials kept out of the command's environment (--keep-aws-env passes them on)");
  const env: NodeJS.ProcessEnv = {
    ...Object.fromEntries(Object.entries(options.env).filter(([k]) => !BYPASS.includes(k) && !withheld.includes(k))),
    PGHOST: socket.slice(0, socket.lastIndexOf('/')),
    PGPORT: socket.slice(socket.lastIndexOf('.') + 1),
    PGSSLMODE: 'disable',
    ...(options.user === undefined ? {} : { PGUSER: options.user }),
  };
  const terminal = options.terminal ?? process.stdin.isTTY === true;
  const child = spawn(options.command, options.args, { env, stdio: 'inherit' });
  const pass = (signal: NodeJS.Signals) => {
    // Ctrl-C at a terminal reaches the whole foreground group: the command (psql cancels its query)
    // and the proxy, which must stay up for that cancel. Sent to the proxy alone, it is passed on.
    if (terminal && FROM_TERMINAL.includes(signal)) return;
    child.kill(signal);
  };
  for (const signal of [...FORWARDED, ...FROM_TERMINAL]) process.on(signal, pass);
  const status = await new Promise<number>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      log.error({ err }, `cannot run ${options.command}: ${err.message}`);
      process.stderr.write(`pg-iam-proxy: cannot run ${options.command}: ${err.code === 'ENOENT' ? 'command not found' : err.message}\n`);
      resolve(err.code === 'ENOENT' ? NOT_FOUND : CANNOT_RUN);
    });
    child.once('exit', (code, signal) => resolve(code ?? SIGNAL_BASE + (signal ? constants.signals[signal] : 0)));
  });
  for (const signal of [...FORWARDED, ...FROM_TERMINAL]) process.off(signal, pass);
  // The command is gone; anything it left behind (a background child's session) gets a short grace.
  await proxy.close(Math.min(config.shutdownGraceMs, LEFT_BEHIND_GRACE_MS));
  clouds.close();
  return status;
}
