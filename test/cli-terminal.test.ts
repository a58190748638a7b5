// What a person sees at a terminal: the real CLI on a pseudo-terminal (script(1)), with no AWS
// credentials, with a credential_process that keeps failing, and with working keys in front of the
// test database. A few lines, one per event, no stack traces, the psql command to type.
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdirSync, readFileSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, cleanAwsEnv, startCli } from './support/cli.js';
import { runPg } from './support/proxy.js';
import { configFile } from './support/aws/files.js';
import { dbWithSts } from './support/aws/sts.js';

const { db, sts } = await dbWithSts(t);

const ENDPOINT = `${db.endpoint}:${db.port}`;
const dial = ['--connect-to', `127.0.0.1:${db.port}`, '--ca-file', db.caFile];
const loopback = ['--listen', '127.0.0.1:0'];
const shellQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
/** A line as the terminal shows it: time, level, the sentence. */
const LINE = /^\d\d:\d\d:\d\d (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) \S/;

/** The CLI on a terminal of its own; what it prints, as the screen shows it. */
function terminal(args: string[], environment: NodeJS.ProcessEnv) {
  // `exec`: the proxy, not a shell, is what Ctrl-C reaches (as in cli-shell.test.ts).
  const command = `exec ${[process.execPath, BIN, ...args].map(shellQuote).join(' ')}`;
  const tty = spawn('script', ['-qfec', command, '/dev/null'], { env: environment, stdio: ['pipe', 'pipe', 'ignore'] });
  t.teardown(() => void tty.kill('SIGKILL'));
  const exit = once(tty, 'exit').then(([code]) => code as number | null);
  let screen = '';
  const watchers = new Set<() => void>();
  tty.stdout.on('data', (d: Buffer) => {
    screen += String(d);
    for (const check of watchers) check();
  });
  // What is read, without the colour of the level words (checked on `colored`) and the terminal's echo of Ctrl-C.
  const plain = () => screen.replace(/\x1b\[[\d;]*m/g, '').replaceAll('^C', '');
  return {
    /** Resolves once the screen shows `pattern`. */
    seen: (pattern: RegExp) =>
      new Promise<RegExpExecArray>((resolve, reject) => {
        const check = () => {
          const m = pattern.exec(plain());
          if (m) {
            watchers.delete(check);
            resolve(m);
          }
        };
        watchers.add(check);
        check();
        void exit.then(() => watchers.has(check) && reject(new Error(`exited before ${pattern}; the screen:\n${plain()}`)));
      }),
    /** Ctrl-C, as a person stops it; its status and every line it printed. */
    stop: async () => {
      tty.stdin.write('\x03');
      const code = await exit;
      const lines = (text: string) => text.split(/\r?\n/).filter(Boolean);
      return { code, lines: lines(plain()), colored: lines(screen) };
    },
  };
}

t.test('no AWS credentials: a few lines, the psql command, no stack trace', async (t) => {
  const cli = terminal([ENDPOINT, ...loopback, ...dial], cleanAwsEnv(db.dir));
  const port = (await cli.seen(/ready: psql "host=127\.0\.0\.1 port=(\d+) user=<db user> dbname=<db>"/))[1];
  await cli.seen(/WARN {2}no AWS credentials yet: clients are told so until they can be had: no AWS credentials for .* tried="environment/);
  const { code, lines, colored } = await cli.stop();
  t.equal(code, 0, 'Ctrl-C: drained and exited');
  t.match(colored[0], /^\S+ \x1b\[32mINFO \x1b\[0m listening /, 'the level word in colour');
  t.match(colored[2], /^\S+ \x1b\[33mWARN \x1b\[0m AWS credentials fetch failed: [^\x1b]*$/, 'and nothing else');
  t.match(lines, [
    new RegExp(`INFO {2}listening listen=127\\.0\\.0\\.1:${port} endpoint=${db.endpoint.replaceAll('.', '\\.')}:${db.port} connect-to=`),
    /INFO {2}ready: psql /,
    /WARN {2}AWS credentials fetch failed: no AWS credentials for the default credential chain: .* next-try=1s$/,
    /WARN {2}no AWS credentials yet/,
  ]);
  t.match(lines.at(-1), /INFO {2}stopped$/);
  t.ok(lines.length <= 8, `a few lines (${lines.length})`);
  for (const line of lines) t.match(line, LINE, 'one line per event');
  t.notMatch(lines.join('\n'), / {4}at |[{}]/, 'no stack frame, no JSON');
});

t.test('a credential source that keeps failing: told once in full, not at every retry', async (t) => {
  const dir = join(db.dir, 'terminal-failing-process');
  mkdirSync(dir, { recursive: true });
  const runs = join(dir, 'runs');
  writeFileSync(runs, '');
  const helper = join(dir, 'helper.sh');
  // Each run leaves a line: the test waits for the retries, not for a time.
  writeFileSync(helper, `#!/bin/sh\necho run >> ${shellQuote(runs)}\necho "token=SECRET456" >&2\nexit 1\n`);
  chmodSync(helper, 0o700);
  const config = configFile(dir, { default: { credential_process: helper } });
  const cli = terminal(
    [ENDPOINT, ...loopback, ...dial, '--db-user', 'app user', '--allow-database', 'orders'],
    cleanAwsEnv(dir, { AWS_CONFIG_FILE: config }),
  );
  await cli.seen(/ready: psql "host=127\.0\.0\.1 port=\d+ user='app user' dbname=orders"/);
  await cli.seen(/no AWS credentials yet/);
  const fetches = () => readFileSync(runs, 'utf8').split('\n').filter(Boolean).length;
  const first = fetches();
  t.ok(first > 0, 'the first fetch ran the helper');
  // The first fetch, then the retries after 1 s and 2 s more.
  await new Promise<void>((resolve) => {
    const check = () => {
      if (fetches() < 3 * first) return;
      watcher.close();
      resolve();
    };
    const watcher = watch(dir, check);
    check();
  });
  const { code, lines } = await cli.stop();
  t.equal(code, 0);
  const count = (pattern: RegExp) => lines.filter((l) => pattern.test(l)).length;
  t.equal(count(/AWS credentials fetch failed/), 1, 'the fetch failure, once');
  t.equal(count(/credential_process of profile default exited 1 program=/), 1, "the helper's failure, once");
  t.ok(lines.length < 15, `a few lines (${lines.length})`);
  t.notMatch(lines.join('\n'), / {4}at |SECRET456/, 'no stack frame, nothing the helper printed');
});

t.test('working credentials: psql through the proxy, one line for its session', async (t) => {
  const cli = terminal(
    [ENDPOINT, ...loopback, ...dial, '--allow-database', 'orders'],
    cleanAwsEnv(db.dir, {
      AWS_ACCESS_KEY_ID: db.key.accessKeyId,
      AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey,
      AWS_ENDPOINT_URL_STS: sts.url,
    }),
  );
  const port = (await cli.seen(/ready: psql "host=127\.0\.0\.1 port=(\d+) user=<db user> dbname=orders"/))[1]!;
  await cli.seen(/AWS identity ready arn=arn:aws:iam::123456789012:user\/ci source=/);
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: port,
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(r.stdout.trim(), 'iam_user', r.stderr);
  await cli.seen(/session closed/);
  const { code, lines } = await cli.stop();
  t.equal(code, 0);
  const key = db.key.accessKeyId;
  const opened = lines.filter((l) => l.includes('session opened'));
  t.equal(opened.length, 1);
  t.match(
    opened[0],
    new RegExp(
      `INFO {2}session opened user=iam_user db=orders from=127\\.0\\.0\\.1:\\d+ ready=\\d+ms signed-by=${key.slice(0, 4)}…${key.slice(-3)}$`,
    ),
  );
  t.match(
    lines.find((l) => l.includes('session closed')),
    /INFO {2}session closed user=iam_user db=orders from=127\.0\.0\.1:\d+ duration=\d+(ms|\.\ds) reason=/,
  );
  for (const line of lines) t.match(line, LINE);
  t.notMatch(lines.join('\n'), /[{}]/, 'no JSON braces');
});

t.test('JSON: the ready line for a wildcard listener and a unix socket; a stack logged once', async (t) => {
  const environment = cleanAwsEnv(db.dir);
  const wide = await startCli(
    [ENDPOINT, ...dial, '--listen', '0.0.0.0:0', '--allow-unauthenticated-network-clients', '--log-format', 'json'],
    environment,
  );
  t.match(await wide.line((l) => String(l.msg).startsWith('ready:')), {
    level: 30,
    instance: ENDPOINT,
    msg: `ready: psql "host=127.0.0.1 port=${wide.port} user=<db user> dbname=<db>"`,
  });
  const told = await wide.line((l) => String(l.msg).startsWith('no AWS credentials yet'));
  const failed = wide.lines.find((l) => l.msg === 'AWS credentials fetch failed')!;
  t.match(failed, { err: { stack: /^NoCredentialsError: .*\n {4}at / }, retryInSeconds: 1 });
  t.match(told, { err: { type: 'NoCredentialsError', stackSeen: true } }, 'the same error again: its stack not repeated');
  t.notOk('stack' in (told.err as object));
  wide.child.kill('SIGTERM');
  t.equal(await wide.exit, 0);

  const sockets = join(db.dir, 'terminal-sockets');
  mkdirSync(sockets, { recursive: true });
  const unix = await startCli([ENDPOINT, ...dial, '--listen', 'none', '--unix-socket', sockets, '--log-format', 'json'], environment);
  t.match(await unix.line((l) => String(l.msg).startsWith('ready:')), {
    msg: `ready: psql "host=${sockets} port=5432 user=<db user> dbname=<db>"`,
  });
  unix.child.kill('SIGTERM');
  t.equal(await unix.exit, 0);
});
