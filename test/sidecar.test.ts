// Running as a service: a config file with two instances (TCP, unix socket), env-only configuration,
// /healthz /readyz /metrics after known traffic, the drain, stale sockets, exit codes, config errors.
import t from 'tap';
import pg from 'pg';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync, statSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { errorOf } from './support/wire.js';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanAwsEnv, runCli, serveArgs, startCli, type StartedCli } from './support/cli.js';
import { startTestDb } from './support/testdb.js';
import { closedPort, runPg } from './support/proxy.js';
import { startSts } from './support/aws/sts.js';
import { loadConfigFile } from '../src/config-file.js';
import { serveConfig } from '../src/commands/settings.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const sts = await startSts();
t.teardown(() => sts.close());
const env = (extra: Record<string, string> = {}) =>
  cleanAwsEnv(db.dir, {
    AWS_ACCESS_KEY_ID: db.key.accessKeyId,
    AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey,
    AWS_ENDPOINT_URL_STS: sts.url,
    ...extra,
  });
const ENDPOINT = `${db.endpoint}:${db.port}`;
let n = 0;
const scratch = () => mkdtempSync(join(db.dir, `sidecar-${++n}-`));

function configFile(yaml: string): string {
  const path = join(scratch(), 'proxy.yaml');
  writeFileSync(path, yaml);
  return path;
}

const httpPort = async (cli: StartedCli) =>
  Number(
    String((await cli.line((l) => l.msg === 'health and metrics listening')).http)
      .split(':')
      .at(-1),
  );
const get = async (port: number, path: string) => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, text: await res.text() };
};
const metric = (text: string, name: string, labels: string) =>
  Number(new RegExp(`^${name}\\{${labels.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

t.test('a config file with two instances, TCP and a unix socket, health and metrics', async (t) => {
  const socketDir = scratch();
  const path = configFile(`# two listeners for one database
http: 127.0.0.1:0
log: { level: info, format: json }
connectTimeout: 5
instances:
  - endpoint: ${ENDPOINT}
    listen: 127.0.0.1:0
    connectTo: 127.0.0.1:${db.port}
    caFile: ${db.caFile}
  - endpoint: ${ENDPOINT}
    listen: 127.0.0.1:0
    unixSocket: ${socketDir}
    unixSocketMode: "0660"
    connectTo: 127.0.0.1:${db.port}
    caFile: ${db.caFile}
    dbUser: iam_user
`);
  const cli = await startCli(['--config', path], env());
  const listening = cli.lines.filter((l) => l.msg === 'listening');
  await cli.line((l) => l.msg === 'listening' && typeof l.unixSocket === 'string');
  const tcp = Number(
    String(cli.lines.find((l) => l.msg === 'listening' && l.instance === `${ENDPOINT}#1`)!.listen)
      .split(':')
      .at(-1),
  );
  const second = cli.lines.find((l) => l.msg === 'listening' && l.instance === `${ENDPOINT}#2`)!;
  const socket = String(second.unixSocket);
  t.ok(listening.length >= 1);
  t.equal(socket, join(socketDir, `.s.PGSQL.${String(second.listen).split(':').at(-1)}`), 'named for the TCP port, as libpq expects');
  t.equal(statSync(socket).mode & 0o777, 0o660, 'the configured mode');

  const viaTcp = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(tcp),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(viaTcp.stdout.trim(), 'iam_user', viaTcp.stderr);
  const viaSocket = await runPg('psql', [
    '-X',
    '-At',
    '-h',
    socketDir,
    '-p',
    socket.split('.').at(-1)!,
    '-U',
    'whoever',
    '-d',
    'orders',
    '-c',
    'SELECT current_user',
  ]);
  t.equal(viaSocket.stdout.trim(), 'iam_user', `psql -h DIR works; dbUser replaced the user: ${viaSocket.stderr}`);
  // sslmode=require: with prefer, libpq would retry the refused login once more without TLS.
  const outsider = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(tcp),
    PGUSER: 'pw_user',
    PGDATABASE: 'orders',
    PGSSLMODE: 'require',
  });
  t.not(outsider.code, 0);
  // Logged in, then refused by the server (no such database): an auth failure, not a ready session.
  const lost = await runPg('psql', ['-X', '-At', '-h', socketDir, '-p', socket.split('.').at(-1)!, '-d', 'nope', '-c', 'SELECT 1']);
  t.match(lost.stderr, /database "nope" does not exist/);

  const port = await httpPort(cli);
  t.same(await get(port, '/healthz'), { status: 200, text: 'ok\n' });
  await cli.line((l) => l.msg === 'AWS identity ready');
  const ready = await get(port, '/readyz');
  t.equal(ready.status, 200, ready.text);
  t.match(JSON.parse(ready.text), { ready: true, draining: false, credentials: [{ ok: true }], instances: [{ ok: true }, { ok: true }] });
  t.equal((await get(port, '/nope')).status, 404);
  t.equal((await fetch(`http://127.0.0.1:${port}/healthz`, { method: 'POST' })).status, 405);

  const { text } = await get(port, '/metrics');
  const first = `instance="${ENDPOINT}#1"`;
  const other = `instance="${ENDPOINT}#2"`;
  t.equal(metric(text, 'pg_iam_proxy_connections_total', first), 2, 'two clients on the TCP instance');
  t.equal(metric(text, 'pg_iam_proxy_connections_total', other), 2, 'dbUser on the socket, and the refused database');
  t.equal(metric(text, 'pg_iam_proxy_connections_active', first), 0);
  t.equal(metric(text, 'pg_iam_proxy_auth_failures_total', `${first},reason="not_iam_user"`), 1);
  t.equal(metric(text, 'pg_iam_proxy_connect_seconds_count', first), 1, 'one login reached ReadyForQuery on #1');
  t.equal(metric(text, 'pg_iam_proxy_connect_seconds_count', other), 1, 'and one on #2: the refused database is not counted ready');
  t.equal(metric(text, 'pg_iam_proxy_auth_failures_total', `${other},reason="upstream_error"`), 1, 'the refused database is a failure');
  t.equal(
    metric(text, 'pg_iam_proxy_tokens_signed_total', first),
    2,
    'one token for iam_user, one for pw_user, on the instance that signed them',
  );
  t.equal(metric(text, 'pg_iam_proxy_tokens_signed_total', other), 0, "#2 reused #1's token for iam_user: counted once");
  t.notMatch(
    text,
    new RegExp(`tokens_signed_total\\{instance="${ENDPOINT.replaceAll('.', '\\.')}"\\}`),
    'no series labelled with the bare endpoint',
  );
  t.equal(metric(text, 'pg_iam_proxy_credential_refreshes_total', 'identity="#1"'), 1);
  t.ok(metric(text, 'pg_iam_proxy_bytes_total', `${first},direction="server_to_client"`) > 300, 'bytes relayed, counted');
  t.ok(metric(text, 'pg_iam_proxy_bytes_total', `${first},direction="client_to_server"`) > 50);
  t.match(text, /^process_resident_memory_bytes \d+/m);

  // The drain: SIGTERM turns /readyz to 503, refuses new clients, lets the open transaction commit.
  await db.admin('GRANT INSERT ON items TO iam_user', 'orders');
  const client = new pg.Client({ host: '127.0.0.1', port: tcp, user: 'iam_user', database: 'orders' });
  await client.connect();
  await client.query('BEGIN');
  await client.query("INSERT INTO items(id, name) VALUES (1000, 'drained')");
  cli.child.kill('SIGTERM');
  await cli.line((l) => String(l.msg).startsWith('shutting down'));
  const draining = await get(port, '/readyz');
  t.equal(draining.status, 503);
  t.match(JSON.parse(draining.text), { ready: false, draining: true });
  t.equal((await get(port, '/healthz')).status, 200, 'still alive while draining');
  const late = new pg.Client({ host: '127.0.0.1', port: tcp, user: 'iam_user', database: 'orders' });
  await t.rejects(late.connect(), { code: '57P03', message: 'pg-iam-proxy is shutting down' }, 'a new client is told, not reset');
  await client.query('COMMIT');
  await client.end();
  t.equal(await cli.exit, 0);
  t.equal((await db.admin("SELECT count(*) FROM items WHERE name = 'drained'", 'orders')).trim(), '1', 'the transaction committed');
});

t.test('sessions still open when the grace ends are closed, with the reason logged', async (t) => {
  const cli = await startCli(serveArgs(db, '--shutdown-grace', '0.2'), env());
  const client = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders' });
  await client.connect();
  const ended = once(client, 'error');
  // A client that has not finished its startup hears FATAL 57P01, as from a server shutting down.
  const silent = connect({ host: '127.0.0.1', port: cli.port });
  await once(silent, 'connect');
  let heard = Buffer.alloc(0);
  silent.on('data', (d: Buffer) => (heard = Buffer.concat([heard, d])));
  const silentClosed = once(silent, 'close');
  await cli.line((l) => l.msg === 'session opened');
  cli.child.kill('SIGTERM');
  await ended;
  await silentClosed;
  t.equal(await cli.exit, 143, 'a drain cut short: 128 + SIGTERM');
  t.ok(cli.lines.some((l) => /2 connection\(s\) still open after waiting 0\.2 s: closing them/.test(String(l.msg))));
  t.ok(
    cli.lines.some(
      (l) =>
        String(l.msg).startsWith('session') &&
        l.phase === 'ready' &&
        /shutting down: the 0\.2 s grace period is over/.test(String(l.reason)),
    ),
    'the reason is logged',
  );
  t.match(errorOf({ code: 'E', bytes: heard }), { code: '57P01', message: /terminating connection: pg-iam-proxy is shutting down/ });
});

/** A client logged in and holding its session open, for a drain to cut short. */
async function holding(port: number): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'iam_user', database: 'orders' });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

t.test('a drain cut short: --exit-zero-on-sigterm exits 0, SIGINT 130 whatever it says', async (t) => {
  const zero = await startCli(serveArgs(db, '--shutdown-grace', '0.2', '--exit-zero-on-sigterm'), env());
  await holding(zero.port);
  zero.child.kill('SIGTERM');
  t.equal(await zero.exit, 0, 'SIGTERM, a session closed at the grace end, exit 0 as asked');
  t.ok(
    zero.lines.some((l) => /1 connection\(s\) still open/.test(String(l.msg))),
    'the drain was cut short',
  );

  const interrupted = await startCli(serveArgs(db, '--shutdown-grace', '0.2'), env({ PG_IAM_PROXY_EXIT_ZERO_ON_SIGTERM: 'true' }));
  await holding(interrupted.port);
  interrupted.child.kill('SIGINT');
  t.equal(await interrupted.exit, 130, 'SIGINT is a person at a terminal: 128 + 2');

  const clean = await startCli(serveArgs(db, '--shutdown-grace', '5'), env());
  const client = await holding(clean.port);
  clean.child.kill('SIGTERM');
  await clean.line((l) => String(l.msg).startsWith('shutting down'));
  await client.end();
  t.equal(await clean.exit, 0, 'every session ended within the grace: 0');
});

t.test('--min-sigterm-delay: new clients are served after SIGTERM, then the drain; /quitquitquit drains at once', async (t) => {
  const path = configFile(`http: 127.0.0.1:0
minSigtermDelay: 3600
shutdownGrace: 5
log: { format: json }
instances:
  - endpoint: ${ENDPOINT}
    listen: 127.0.0.1:0
    connectTo: 127.0.0.1:${db.port}
    caFile: ${db.caFile}
`);
  const cli = await startCli(['--config', path], env());
  const port = await httpPort(cli);
  await cli.line((l) => l.msg === 'AWS identity ready');
  t.same(await get(port, '/startup'), { status: 200, text: 'started\n' });
  const open = await holding(cli.port);
  cli.child.kill('SIGTERM');
  const waiting = await cli.line((l) => String(l.msg).includes('--min-sigterm-delay'));
  t.match(waiting, {
    signal: 'SIGTERM',
    delaySeconds: 3600,
    msg: 'SIGTERM: still accepting new clients for 3600 s (--min-sigterm-delay), then draining',
  });
  t.match(JSON.parse((await get(port, '/readyz')).text), { ready: false, draining: true }, 'not ready: the proxy is going');
  const late = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(cli.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(late.stdout.trim(), 'iam_user', `a client arriving after SIGTERM is served: ${late.stderr}`);
  t.notOk(
    cli.lines.some((l) => String(l.msg).startsWith('shutting down')),
    'no drain yet',
  );
  t.equal((await fetch(`http://127.0.0.1:${port}/quitquitquit`)).status, 405, 'GET does not stop it');
  const quit = await fetch(`http://127.0.0.1:${port}/quitquitquit`, { method: 'POST' });
  t.equal(quit.status, 200, 'POST from loopback');
  t.match(await cli.line((l) => String(l.msg).startsWith('shutting down')), { request: 'POST /quitquitquit', graceSeconds: 5 });
  await open.query('SELECT 1').then(
    () => t.pass('the open session still runs during the drain'),
    (err: Error) => t.fail(err.message),
  );
  await open.end();
  t.equal(await cli.exit, 0, 'every session ended in the grace');
});

t.test('--min-sigterm-delay ends by itself: then the drain as without it', async (t) => {
  const cli = await startCli(serveArgs(db, '--min-sigterm-delay', '0.3'), env());
  const open = await holding(cli.port);
  await open.query('BEGIN');
  cli.child.kill('SIGTERM');
  await cli.line((l) => String(l.msg).includes('--min-sigterm-delay'));
  t.match(await cli.line((l) => String(l.msg).startsWith('shutting down')), { signal: 'SIGTERM' }, 'the delay over, the drain');
  const late = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders' });
  await t.rejects(late.connect(), { code: '57P03' }, 'a new client is now told');
  await open.query('COMMIT');
  await open.end();
  t.equal(await cli.exit, 0);
});

t.test('/quitquitquit with nothing open exits 0 at once; /startup waits for credentials', async (t) => {
  // No credentials anywhere: the proxy serves, /startup says it is still starting.
  const bare = await startCli(serveArgs(db, '--http', '127.0.0.1:0', '--min-sigterm-delay', '3600'), cleanAwsEnv(db.dir));
  const bareHttp = await httpPort(bare);
  await bare.line((l) => String(l.msg).includes('no AWS credentials'));
  t.same(await get(bareHttp, '/startup'), { status: 503, text: 'starting\n' }, 'no credentials: a startup probe keeps the app waiting');
  const res = await fetch(`http://127.0.0.1:${bareHttp}/quitquitquit`, { method: 'POST' });
  t.same({ status: res.status, text: await res.text() }, { status: 200, text: 'shutting down\n' }, 'the answer arrives before the exit');
  t.equal(await bare.exit, 0, 'nothing was open: exit 0, no --min-sigterm-delay');
  t.ok(bare.lines.some((l) => l.msg === 'stopped'));
});

t.test('configured by the environment alone', async (t) => {
  const cli = await startCli(
    [],
    env({
      PG_IAM_PROXY_ENDPOINT: ENDPOINT,
      PG_IAM_PROXY_LISTEN: '127.0.0.1:0',
      PG_IAM_PROXY_CONNECT_TO: `127.0.0.1:${db.port}`,
      PG_IAM_PROXY_CA_FILE: db.caFile,
      PG_IAM_PROXY_HTTP: '127.0.0.1:0',
      PG_IAM_PROXY_LOG_FORMAT: 'json',
      PG_IAM_PROXY_DB_USER: 'iam_user',
    }),
  );
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(cli.port),
    PGUSER: 'anyone',
    PGDATABASE: 'orders',
  });
  t.equal(r.stdout.trim(), 'iam_user', r.stderr);
  t.equal((await get(await httpPort(cli), '/healthz')).status, 200);
  cli.child.kill('SIGINT');
  t.equal(await cli.exit, 0);
});

t.test('precedence: flags > PG_IAM_PROXY_* > file > defaults', async (t) => {
  const path = configFile(`maxConnections: 7
startupTimeout: 3
shutdownGrace: 4
log: { level: debug }
aws: { profile: from-file, region: eu-west-1 }
instances:
  - endpoint: ${ENDPOINT}
    listen: 127.0.0.1:6001
`);
  const base = { config: path, endpoint: undefined } as never;
  const fromFile = serveConfig(base, {});
  t.match(fromFile.config, { maxConnections: 7, startupTimeoutMs: 3000, shutdownGraceMs: 4000, connectTimeoutMs: 10_000 });
  t.match(fromFile.config.instances[0], { region: 'eu-west-1', identity: { profile: 'from-file' }, listen: { port: 6001 } });
  t.equal(fromFile.log.level, 'debug');
  const flags = serveConfig(
    { config: path, 'max-connections': 9, profile: 'from-flag', listen: '127.0.0.1:6002', 'log-level': 'warn' } as never,
    {},
  );
  t.match(flags.config, { maxConnections: 9, startupTimeoutMs: 3000 });
  t.match(flags.config.instances[0], { identity: { profile: 'from-flag' }, listen: { port: 6002 } });
  t.equal(flags.log.level, 'warn');
  const defaults = serveConfig({ endpoint: ENDPOINT } as never, {});
  t.match(defaults.config, { maxConnections: undefined, startupTimeoutMs: 15_000, shutdownGraceMs: 30_000, connectTimeoutMs: 10_000 });
  t.match(defaults, { http: undefined, requireCredentials: false, log: { level: 'info' } });
  // The environment is merged into the flags by yargs, below them: through the real CLI.
  const r = await runCli(['--config', path, '--max-connections', '0'], env({ PG_IAM_PROXY_MAX_CONNECTIONS: '5' }));
  t.match(
    r,
    { code: 2, stderr: /--max-connections \(PG_IAM_PROXY_MAX_CONNECTIONS\): 0 is not a whole number/ },
    'the flag (0) beat the environment (5)',
  );
  const e = await runCli(
    ['--config', path, '--listen', '127.0.0.1:0', '--log-format', 'json', '--http', 'nonsense'],
    env({ PG_IAM_PROXY_MAX_CONNECTIONS: '-1' }),
  );
  t.match(e, { code: 2, stderr: /--max-connections/ }, 'the environment (-1) beat the file (7)');
});

t.test('unix sockets: a stale file is replaced, a live one or a non-socket is not', async (t) => {
  const dir = scratch();
  const free = await closedPort();
  const path = join(dir, `.s.PGSQL.${free}`);
  // A socket file left by a process that died without cleaning up.
  // (A process killed while listening leaves its socket file behind.)
  try {
    execFileSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
  } catch {
    // killed, as intended
  }
  t.ok(statSync(path).isSocket());
  const args = [
    ENDPOINT,
    '--listen',
    `127.0.0.1:${free}`,
    '--unix-socket',
    dir,
    '--connect-to',
    `127.0.0.1:${db.port}`,
    '--ca-file',
    db.caFile,
    '--log-format',
    'json',
  ];
  const cli = await startCli(args, env());
  t.equal(statSync(path).mode & 0o777, 0o600, 'owner-only by default');
  const r = await runPg('psql', ['-X', '-At', '-h', dir, '-p', String(free), '-U', 'iam_user', '-d', 'orders', '-c', 'SELECT 1']);
  t.equal(r.stdout.trim(), '1', r.stderr);

  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);

  // A socket some live process listens on is left alone.
  const liveDir = scratch();
  const livePort = await closedPort();
  const live = createServer().listen(join(liveDir, `.s.PGSQL.${livePort}`));
  await once(live, 'listening');
  const second = await runCli([ENDPOINT, '--listen', `127.0.0.1:${livePort}`, '--unix-socket', liveDir, ...args.slice(5)], env());
  t.match(second, { code: 1, stderr: /another process is listening on .*\.s\.PGSQL\./ });
  live.close();

  const notSocket = join(scratch(), `.s.PGSQL.${free}`);
  writeFileSync(notSocket, 'keep me');
  const refused = await runCli([...args.slice(0, 4), notSocket.slice(0, notSocket.lastIndexOf('/')), ...args.slice(5)], env());
  t.match(refused, { code: 1, stderr: /exists and is not a socket: not replacing it/ });
});

t.test('exit codes a supervisor can act on', async (t) => {
  const busy = createServer().listen(0, '127.0.0.1');
  await once(busy, 'listening');
  const port = (busy.address() as { port: number }).port;
  t.match(await runCli([ENDPOINT, '--listen', `127.0.0.1:${port}`, '--log-format', 'json'], env()), { code: 1, stderr: /address in use/ });
  t.match(
    await runCli([ENDPOINT, '--listen', '127.0.0.1:0', '--http', `127.0.0.1:${port}`, '--log-format', 'json'], env()),
    { code: 1, stderr: /address in use/ },
    'the HTTP port too',
  );
  busy.close();
  const none = await runCli([ENDPOINT, '--listen', '127.0.0.1:0', '--require-credentials', '--log-format', 'json'], cleanAwsEnv(db.dir));
  t.match(none, { code: 3, stderr: /no AWS credentials at start, and --require-credentials is set/ });
});

t.test('config errors name the file, the line and the key', async (t) => {
  const bad = async (yaml: string, extra: string[] = []) => {
    const path = configFile(yaml);
    const r = await runCli(['--config', path, ...extra], env());
    t.equal(r.code, 2, r.stderr);
    return r.stderr.replace(path, 'FILE');
  };
  t.match(
    await bad(`instances:\n  - endpoint: ${ENDPOINT}\n    lisen: 127.0.0.1:1\n`),
    /FILE:3: instances\[0\]\.lisen: unknown key \(known here: endpoint, listen,/,
  );
  t.match(
    await bad(`maxConnections: many\ninstances:\n  - endpoint: ${ENDPOINT}\n`),
    /FILE:1: maxConnections: a number is expected, not "many"/,
  );
  t.match(await bad(`instances:\n  - listen: 127.0.0.1:1\n`), /FILE:2: instances\[0\]\.endpoint: missing/);
  t.match(await bad(`instances: []\n`), /at least one instance/);
  t.match(await bad(`instances:\n  - endpoint: ${ENDPOINT}\n    listen: [1\n`), /FILE:\d+: /);
  t.match(await bad(`- just a list\n`), /FILE:1: the file must be a mapping/);
  t.match(await bad(`instances:\n  - endpoint: ${ENDPOINT}\n    listen: 127.0.0.1:99999\n`), /FILE:2: instances\[0\]: .*listen/);
  t.match(
    await bad(`instances:\n  - endpoint: ${ENDPOINT}\n    listen: 127.0.0.1:7001\n  - endpoint: ${ENDPOINT}\n    listen: 127.0.0.1:7001\n`),
    /instances\[0\] and instances\[1\] both listen on 127\.0\.0\.1:7001/,
  );
  t.match(
    await bad(`instances:\n  - endpoint: ${ENDPOINT}\n  - endpoint: ${ENDPOINT}\n    listen: 127.0.0.1:7002\n`, [
      '--listen',
      '127.0.0.1:7003',
    ]),
    /--listen: FILE has 2 instances; set this per instance in the file/,
  );
  t.match(await bad(`instances:\n  - endpoint: ${ENDPOINT}\n`, [ENDPOINT]), /not both/);
  t.match(await bad(`log: { level: loud }\ninstances:\n  - endpoint: ${ENDPOINT}\n`), /log level: "loud"/);
  t.match(await bad(`instances:\n  - endpoint: ${ENDPOINT}\n    unixSocket: relative/dir\n`), /not an absolute directory path/);
  t.match(
    await bad(`instances:\n  - endpoint: ${ENDPOINT}\n    unixSocket: /tmp\n    unixSocketMode: "0444"\n`),
    /unix-socket-mode: "0444"/,
  );
  t.match(await runCli(['--config', '/nonexistent/proxy.yaml'], env()), {
    code: 2,
    stderr: /--config \/nonexistent\/proxy\.yaml: no such file/,
  });
});

t.test('config.example.yaml documents every key and is valid', async (t) => {
  const example = fileURLToPath(new URL('../../config.example.yaml', import.meta.url));
  const file = loadConfigFile(example);
  t.equal(file.instances.length, 5);
  const settings = serveConfig({ config: example } as never, {});
  t.match(settings.config.instances[0], {
    unixSocket: { dir: '/var/run/postgresql', port: 5432, mode: 0o600 },
    identity: { profile: 'app', roleArn: /orders-db/ },
    clientTls: { mode: 'auto' },
    allowUsers: ['app_iam', 'app_readonly'],
  });
  t.match(settings.config.instances[1], { region: 'eu-west-1', identity: { profile: 'reporting' }, allowUsers: undefined });
  // One per cloud: Azure told by its name and by `cloud:`, Cloud SQL by its connection name; no AWS identity.
  t.same(
    settings.config.instances.map((i) => [i.cloud, i.identity, i.users === undefined]),
    [
      ['aws', { profile: 'app', roleArn: 'arn:aws:iam::123456789012:role/orders-db' }, false],
      ['aws', { profile: 'reporting' }, false],
      ['azure', {}, true],
      ['azure', {}, true],
      ['gcp', {}, true],
    ],
  );
  t.match(settings, { http: { host: '127.0.0.1', port: 9090 }, requireCredentials: false });
});

t.test('a live socket whose backlog is full is not taken for a stale one', async (t) => {
  const dir = scratch();
  const port = await closedPort();
  const path = join(dir, `.s.PGSQL.${port}`);
  const py = spawn('python3', [
    '-c',
    `import socket,time; s=socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(path)}); s.listen(0); print('up', flush=True); time.sleep(120)`,
  ]);
  t.teardown(() => void py.kill());
  await once(py.stdout!, 'data');
  const filler = connect({ path });
  filler.on('error', () => undefined);
  await once(filler, 'connect');
  t.teardown(() => void filler.destroy());
  const r = await runCli([ENDPOINT, '--listen', `127.0.0.1:${port}`, '--unix-socket', dir, '--log-format', 'json'], env());
  t.match(r, { code: 1, stderr: /another process is listening on/ });
  t.ok(statSync(path).isSocket(), 'the live socket is still there');
});
