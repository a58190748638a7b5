// Options as users give them: each command reads the PG_IAM_PROXY_* variables that apply to it and
// ignores the rest (a sidecar's environment is shared with `doctor` and `token`), numbers are checked
// against what they can mean wherever they come from, and `--listen none` serves on the unix socket alone.
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanAwsEnv, runCli, startCli } from './support/cli.js';
import { startTestDb } from './support/testdb.js';
import { runPg } from './support/proxy.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const ENDPOINT = `${db.endpoint}:${db.port}`;
const env = (extra: Record<string, string> = {}) =>
  cleanAwsEnv(db.dir, { AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey, ...extra });
/** What the README's Kubernetes example sets for the sidecar. */
const SIDECAR_ENV = {
  PG_IAM_PROXY_HTTP: '127.0.0.1:0',
  PG_IAM_PROXY_SHUTDOWN_GRACE: '30',
  PG_IAM_PROXY_LISTEN: '127.0.0.1:0',
  PG_IAM_PROXY_CONNECT_TO: `127.0.0.1:${db.port}`,
};
let n = 0;
const scratch = () => mkdtempSync(join(db.dir, `options-${++n}-`));

t.test('serve-only variables do not break token and doctor; flags stay strict', async (t) => {
  const token = await runCli(['token', ENDPOINT, '--user', 'iam_user'], env(SIDECAR_ENV));
  t.equal(token.code, 0, token.stderr);
  t.match(token.stdout, /^mydb\.abc123xyz\.us-east-1\.rds\.amazonaws\.com:\d+\/\?Action=connect&DBUser=iam_user&/);
  const doctor = await runCli(
    ['doctor', ENDPOINT, '--user', 'iam_user', '--database', 'orders', '--ca-file', db.caFile, '--json'],
    env(SIDECAR_ENV),
  );
  t.equal(doctor.code, 0, `doctor read PG_IAM_PROXY_CONNECT_TO and ignored the rest: ${doctor.stderr}${doctor.stdout.slice(-500)}`);
  t.match(JSON.parse(doctor.stdout), { ok: true });
  const strict = await runCli(['token', ENDPOINT, '--user', 'iam_user', '--listen', '127.0.0.1:1'], env());
  t.match(strict, { code: 2, stderr: /Unknown argument: listen/ }, 'a flag that does not apply is still an error');
});

t.test('numbers: out of range or not a number is exit 2, naming the option and the range', async (t) => {
  const rows: Array<[desc: string, args: string[], extra: Record<string, string>, want: RegExp]> = [
    [
      'a timeout a timer cannot hold',
      ['--startup-timeout', '2147484'],
      {},
      /--startup-timeout \(PG_IAM_PROXY_STARTUP_TIMEOUT\): 2147484 is not a number of seconds greater than 0 and at most 3600/,
    ],
    [
      'connect timeout too large',
      ['--connect-timeout', '3000000'],
      {},
      /--connect-timeout .*3000000 is not a number of seconds greater than 0 and at most 3600/,
    ],
    ['zero timeout', ['--connect-timeout', '0'], {}, /--connect-timeout .*0 is not a number of seconds greater than 0/],
    [
      'a unit in the environment',
      [],
      { PG_IAM_PROXY_SHUTDOWN_GRACE: '30s' },
      /--shutdown-grace \(PG_IAM_PROXY_SHUTDOWN_GRACE\): "30s" is not a number of seconds from 0 to 86400/,
    ],
    ['negative grace', ['--shutdown-grace', '-1'], {}, /--shutdown-grace .*-1 is not a number of seconds from 0 to 86400/],
    ['a fraction of a connection', ['--max-connections', '1.5'], {}, /--max-connections .*1\.5 is not a whole number from 1 to 1000000/],
    [
      'no connections',
      [],
      { PG_IAM_PROXY_MAX_CONNECTIONS: '0' },
      /--max-connections \(PG_IAM_PROXY_MAX_CONNECTIONS\): 0 is not a whole number/,
    ],
    ['text', ['--startup-timeout', 'soon'], {}, /--startup-timeout .*"soon" is not a number of seconds/],
  ];
  for (const [desc, args, extra, want] of rows) {
    const r = await runCli([ENDPOINT, '--log-format', 'json', ...args], env(extra));
    t.match(r, { code: 2, stderr: want }, desc);
  }
  const doctor = await runCli(['doctor', ENDPOINT, '--user', 'iam_user', '--connect-timeout', '1e9'], env());
  t.match(doctor, { code: 2, stderr: /--connect-timeout/ }, 'doctor checks it too');
  const file = join(scratch(), 'proxy.yaml');
  writeFileSync(file, `instances:\n  - endpoint: ${ENDPOINT}\nshutdownGrace: 100000\n`);
  t.match(
    await runCli(['--config', file], env()),
    { code: 2, stderr: new RegExp(`${file.replaceAll('.', '\\.')}:3: shutdownGrace: 100000 is not a number of seconds from 0 to 86400`) },
    'the file, with its line',
  );
});

/** TCP sockets this process listens on, from /proc: the inodes of its socket descriptors in LISTEN state. */
function tcpListeners(pid: number): number {
  const inodes = new Set(
    readdirSync(`/proc/${pid}/fd`)
      .map((fd) => {
        try {
          return readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          return '';
        }
      })
      .map((link) => /^socket:\[(\d+)\]$/.exec(link)?.[1])
      .filter((inode): inode is string => inode !== undefined),
  );
  let count = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const cols = row.trim().split(/\s+/);
      if (cols[3] === '0A' && inodes.has(cols[9]!)) count++; // 0A: LISTEN
    }
  }
  return count;
}

t.test('--listen none: the unix socket alone, no TCP port for other local users', async (t) => {
  const dir = scratch();
  const cli = await startCli(
    [ENDPOINT, '--ca-file', db.caFile, '--unix-socket', dir, '--log-format', 'json'],
    env({ PG_IAM_PROXY_LISTEN: 'none', PG_IAM_PROXY_CONNECT_TO: `127.0.0.1:${db.port}` }),
  );
  const listening = cli.lines.find((l) => l.msg === 'listening')!;
  t.notOk('listen' in listening, 'no TCP address logged');
  t.equal(listening.unixSocket, join(dir, '.s.PGSQL.5432'));
  t.equal(tcpListeners(cli.child.pid!), 0, 'no TCP socket listening in the process');
  const r = await runPg('psql', ['-X', '-At', '-h', dir, '-U', 'iam_user', '-d', 'orders', '-c', 'SELECT current_user']);
  t.equal(r.stdout.trim(), 'iam_user', r.stderr);
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);

  t.match(await runCli([ENDPOINT, '--listen', 'none'], env()), {
    code: 2,
    stderr: /--listen none leaves no way in: give --unix-socket DIR too/,
  });
  const file = join(scratch(), 'proxy.yaml');
  writeFileSync(file, `instances:\n  - endpoint: ${ENDPOINT}\n    listen: none\n`);
  t.match(await runCli(['--config', file], env()), {
    code: 2,
    stderr: new RegExp(`${file.replaceAll('.', '\\.')}:2: instances\\[0\\]: --listen none leaves no way in`),
  });
});

t.test('a network listener with a client password and the generated certificate: warned at start', async (t) => {
  const passwordFile = join(scratch(), 'password');
  writeFileSync(passwordFile, 'pw\n', { mode: 0o600 });
  const cli = await startCli([ENDPOINT, '--listen', '0.0.0.0:0', '--client-password-file', passwordFile, '--log-format', 'json'], env());
  t.ok(
    cli.lines.some(
      (l) => /takes network clients with a certificate made at start, which no client can verify/.test(String(l.msg)) && l.level === 40,
    ),
  );
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});
