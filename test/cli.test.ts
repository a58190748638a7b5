// The command as users run it: a separate process, configured by flags and PG_IAM_PROXY_*, credentials
// from the real AWS SDK default chain (environment variables here), signals.
import t from 'tap';
import pg from 'pg';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { spawn } from 'node:child_process';
import { BIN, cleanAwsEnv, runCli, startCli } from './support/cli.js';
import { startTestDb } from './support/testdb.js';
import { runPg } from './support/proxy.js';

const db = await startTestDb();
t.teardown(() => db.destroy());

const awsEnv = (extra: Record<string, string>) => cleanAwsEnv(db.dir, extra);
const withKeys = () => awsEnv({ AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey });
const start = startCli;

const serveArgs = () => [`${db.endpoint}:${db.port}`, '--listen', '127.0.0.1:0', '--ca-file', db.caFile, '--log-format', 'json'];

t.test('serve: configured from flags and PG_IAM_PROXY_*, credentials from the environment, SIGTERM drains', async (t) => {
  const p = await start(serveArgs(), { ...withKeys(), PG_IAM_PROXY_CONNECT_TO: `127.0.0.1:${db.port}` });
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(p.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(r.stdout.trim(), 'iam_user', r.stderr);
  // A transaction open when SIGTERM arrives can still commit; new connections are refused.
  const client = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'iam_user', database: 'orders' });
  await client.connect();
  await client.query('BEGIN');
  await client.query('CREATE TEMP TABLE t(x int)');
  p.child.kill('SIGTERM');
  await p.line((l) => String(l.msg).startsWith('shutting down'));
  const late = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'iam_user', database: 'orders' });
  // Told why, every time: a listener closed under it would reset a connection already in its backlog.
  await t.rejects(late.connect(), { code: '57P03', message: 'pg-iam-proxy is shutting down' }, 'no new sessions while draining');
  const psql = await runPg('psql', ['-X', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(p.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.match(psql.stderr, /FATAL: {2}pg-iam-proxy is shutting down/, 'psql says so');
  await client.query('COMMIT');
  await client.end();
  t.equal(await p.exit, 0, 'exit 0 once the session ended');
  t.ok(
    p.lines.some(
      (l) =>
        String(l.msg).startsWith('AWS credentials ready') &&
        l.accessKeyId === db.key.accessKeyId &&
        l.source === 'environment variables (AWS_ACCESS_KEY_ID)',
    ),
  );
  t.ok(p.lines.some((l) => l.msg === 'stopped'));
});

t.test('a second signal cuts the drain short: exit 128 + signal', async (t) => {
  const p = await start([...serveArgs(), '--connect-to', `127.0.0.1:${db.port}`], withKeys());
  const client = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'iam_user', database: 'orders' });
  await client.connect();
  client.on('error', () => undefined);
  p.child.kill('SIGTERM');
  await p.line((l) => String(l.msg).startsWith('shutting down'));
  p.child.kill('SIGTERM');
  t.equal(await p.exit, 143);
});

t.test('no credentials: the client is told, the proxy keeps serving', async (t) => {
  const p = await start([...serveArgs(), '--connect-to', `127.0.0.1:${db.port}`], awsEnv({}));
  const client = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'iam_user', database: 'orders' });
  const err = await client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, {
    code: '08001',
    message: /could not sign an IAM token: no AWS credentials for the default credential chain/,
    detail:
      /^Sources tried, in order: environment variables \(Unable to find environment variable credentials\.\); SSO settings.*; the shared config and credentials files.*; credential_process.*; a web identity token file.*; the ECS\/EKS container endpoint \(skipped: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set\); EC2 instance metadata \(IMDSv2\) \(skipped: AWS_EC2_METADATA_DISABLED is set\)\.$/,
    hint: /aws sts get-caller-identity/,
  });
  // The log line may reach us after the client's error: wait for it.
  t.match(await p.line((l) => l.msg === 'no AWS credentials yet: clients are told so until they can be had'), {
    tried: /^environment variables/,
  });
  p.child.kill('SIGINT');
  t.equal(await p.exit, 0);
});

t.test('a closed stdout and stderr never hold up the exit (`2>&1 | tee log`, tee gone first at Ctrl-C)', async (t) => {
  for (const [format, signal] of [
    ['json', 'SIGINT'],
    ['json', 'SIGTERM'],
    ['pretty', 'SIGINT'],
  ] as const) {
    await t.test(`--log-format ${format}, ${signal}`, { timeout: 30_000 }, async (t) => {
      const args = [...serveArgs().slice(0, -1), format, '--log-level', 'debug', '--connect-to', `127.0.0.1:${db.port}`];
      const child = spawn(process.execPath, [BIN, ...args], { env: withKeys(), stdio: ['ignore', 'pipe', 'pipe'] });
      t.teardown(() => void child.kill('SIGKILL'));
      const exited = once(child, 'exit');
      // Its signal handlers are in place once it says how to connect.
      let said = '';
      for await (const chunk of child.stderr) if (/ready: psql/.test((said += String(chunk)))) break;
      // The readers go away (breaking out of the loop destroyed stderr's): every later write meets EPIPE.
      child.stdout.destroy();
      child.stderr.destroy();
      child.kill(signal);
      const [code, killedBy] = (await exited) as [number | null, NodeJS.Signals | null];
      t.same({ code, killedBy }, { code: 0, killedBy: null }, 'it drained and exited 0, its last lines lost');
    });
  }
});

t.test('a log reader that stops reading stalls neither the proxy nor its exit', { timeout: 120_000 }, async (t) => {
  const args = [...serveArgs().slice(0, -1), 'json', '--log-level', 'debug', '--connect-to', `127.0.0.1:${db.port}`];
  const child = spawn(process.execPath, [BIN, ...args], { env: withKeys(), stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => void child.kill('SIGKILL'));
  const exited = once(child, 'exit');
  let said = '';
  let bytes = 0;
  child.stderr.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (said.length < 100_000) said += String(chunk);
  });
  while (!/"msg":"listening"/.test(said)) await once(child.stderr, 'data');
  const port = Number(/"listen":"127\.0\.0\.1:(\d+)"/.exec(said)![1]);
  // Nobody reads the proxy's stderr now: the pipe fills after 64 KiB, and every line after that waits in
  // the proxy. Sessions go on all the same, each logging a few debug lines.
  child.stderr.pause();
  const before = bytes;
  // Clients with a startup of an unknown protocol version: each is answered with a FATAL and logged.
  const refused = async (n: number) => {
    const bad = Buffer.from([0, 0, 0, 8, 0, 9, 0, 9]);
    let answered = 0;
    for (let i = 0; i < n; i++) {
      const socket = connect({ host: '127.0.0.1', port });
      const got: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => got.push(chunk));
      socket.end(bad);
      await once(socket, 'close');
      if (Buffer.concat(got).subarray(0, 1).toString() === 'E') answered++;
    }
    return answered;
  };
  const session = async () => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'iam_user', database: 'orders' });
    await client.connect();
    const { rows } = await client.query('SELECT 1 AS one');
    await client.end();
    return rows;
  };
  t.equal(await refused(400), 400, 'every client answered while nobody read the log');
  t.same(await session(), [{ one: 1 }], 'and a login served');
  t.equal(bytes, before, 'nothing was read meanwhile');
  // Reading again: everything the proxy wrote comes, more than the pipe could hold.
  child.stderr.resume();
  while (!said.slice(-2000).includes('"msg":"session closed"') || bytes - before < 100 * 1024) await once(child.stderr, 'data');
  t.ok(bytes - before > 64 * 1024, `${bytes - before} bytes of log waited, more than a pipe holds`);
  // Stopped again with lines waiting: the exit does not wait for a reader.
  child.stderr.pause();
  t.equal(await refused(400), 400);
  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  t.equal(code, 0, 'drained and exited, its last lines left unread');
});

t.test('configuration errors exit 2 with the reason; a port in use exits 1', async (t) => {
  const run = (args: string[], env = withKeys()) => runCli(args, env);
  t.match(await run(['db.corp.example']), { code: 2, stderr: /cannot tell the signing region for db\.corp\.example.*--region/ });
  t.match(await run([]), {
    code: 2,
    stderr: /an ENDPOINT \(the RDS endpoint name, Azure server name or Cloud SQL connection name\) or --config FILE is needed/,
  });
  t.match(await run([db.endpoint, '--max-connections', '0']), { code: 2, stderr: /--max-connections/ });
  t.match(await run([db.endpoint, '--startup-timeout', '-1']), { code: 2, stderr: /--startup-timeout/ });
  t.match(await run([db.endpoint, '--bogus']), { code: 2, stderr: /Unknown argument: bogus/ });
  t.match(await run([db.endpoint, '--ca-file', '/nonexistent.pem']), { code: 1, stderr: /--ca-file \/nonexistent\.pem/ });
  const busy = createServer().listen(0, '127.0.0.1');
  await once(busy, 'listening');
  const port = (busy.address() as { port: number }).port;
  t.match(await run([db.endpoint, '--listen', `127.0.0.1:${port}`, '--log-format', 'json']), { code: 1, stderr: /address in use/ });
  t.match(await run([db.endpoint, '--listen', `127.0.0.1:${port}`, '--log-format', 'pretty']), {
    code: 1,
    stderr: /FATAL.*cannot listen: address in use/,
  });
  busy.close();
  t.match(await run(['--help']), { code: 0 });
});
