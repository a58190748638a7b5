// The command as users run it: a separate process, configured by flags and PG_IAM_PROXY_*, credentials
// from the real AWS SDK default chain (environment variables here), signals.
import t from 'tap';
import pg from 'pg';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { startTestDb } from './support/testdb.js';
import { runPg } from './support/proxy.js';

const BIN = fileURLToPath(new URL('../../bin/pg-iam-proxy.js', import.meta.url));
const db = await startTestDb();
t.teardown(() => db.destroy());

/** An environment with no AWS configuration but what the test gives: nothing on the machine leaks in. */
function awsEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_') && !k.startsWith('PG_IAM_PROXY_')));
  return { ...clean, HOME: db.dir, AWS_CONFIG_FILE: `${db.dir}/none`, AWS_SHARED_CREDENTIALS_FILE: `${db.dir}/none`, AWS_EC2_METADATA_DISABLED: 'true', ...extra };
}
const withKeys = () => awsEnv({ AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey });

interface Started {
  child: ChildProcess;
  port: number;
  lines: Array<Record<string, unknown>>;
  exit: Promise<number | null>;
}

/** Start the CLI and wait for its "listening" line. */
async function start(args: string[], env: NodeJS.ProcessEnv): Promise<Started> {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Array<Record<string, unknown>> = [];
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      lines.push(entry);
      if (entry.msg === 'listening') resolve(Number(String(entry.listen).split(':').at(-1)));
    });
    exit.then((code) => reject(new Error(`exited ${code}: ${JSON.stringify(lines)}`)));
  });
  return { child, port, lines, exit };
}

const serveArgs = () => [`${db.endpoint}:${db.port}`, '--listen', '127.0.0.1:0', '--ca-file', db.caFile, '--log-format', 'json'];

t.test('serve: configured from flags and PG_IAM_PROXY_*, credentials from the environment, SIGTERM drains', async (t) => {
  const p = await start(serveArgs(), { ...withKeys(), PG_IAM_PROXY_CONNECT_TO: `127.0.0.1:${db.port}` });
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], { PGHOST: '127.0.0.1', PGPORT: String(p.port), PGUSER: 'iam_user', PGDATABASE: 'orders' });
  t.equal(r.stdout.trim(), 'iam_user', r.stderr);
  // A transaction open when SIGTERM arrives can still commit; new connections are refused.
  const client = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'iam_user', database: 'orders' });
  await client.connect();
  await client.query('BEGIN');
  await client.query('CREATE TEMP TABLE t(x int)');
  p.child.kill('SIGTERM');
  await new Promise<void>((resolve) => {
    const check = () => (p.lines.some((l) => String(l.msg).startsWith('shutting down')) ? resolve() : setImmediate(check));
    check();
  });
  const late = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'iam_user', database: 'orders' });
  await t.rejects(late.connect(), /ECONNREFUSED/, 'no new connections while draining');
  await client.query('COMMIT');
  await client.end();
  t.equal(await p.exit, 0, 'exit 0 once the session ended');
  t.ok(p.lines.some((l) => l.msg === 'AWS credentials ready' && l.accessKeyId === db.key.accessKeyId));
  t.ok(p.lines.some((l) => l.msg === 'stopped'));
});

t.test('a second signal cuts the drain short: exit 128 + signal', async (t) => {
  const p = await start([...serveArgs(), '--connect-to', `127.0.0.1:${db.port}`], withKeys());
  const client = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'iam_user', database: 'orders' });
  await client.connect();
  client.on('error', () => undefined);
  p.child.kill('SIGTERM');
  await new Promise<void>((resolve) => {
    const check = () => (p.lines.some((l) => String(l.msg).startsWith('shutting down')) ? resolve() : setImmediate(check));
    check();
  });
  p.child.kill('SIGTERM');
  t.equal(await p.exit, 143);
});

t.test('no credentials: the client is told, the proxy keeps serving', async (t) => {
  const p = await start([...serveArgs(), '--connect-to', `127.0.0.1:${db.port}`], awsEnv({}));
  const client = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'iam_user', database: 'orders' });
  const err = await client.connect().then(() => undefined, (e: pg.DatabaseError) => e);
  t.match(err, { code: '08001', message: /could not sign an IAM token/, hint: /default chain.*aws sts get-caller-identity/ });
  t.ok(p.lines.some((l) => l.msg === 'no AWS credentials yet: clients will be told until they can be had'));
  p.child.kill('SIGINT');
  t.equal(await p.exit, 0);
});

t.test('configuration errors exit 2 with the reason; a port in use exits 1', async (t) => {
  const run = async (args: string[], env = withKeys()) => {
    const child = spawn(process.execPath, [BIN, ...args], { env });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const [code] = await once(child, 'exit');
    return { code: code as number, stderr };
  };
  t.match(await run(['db.corp.example']), { code: 2, stderr: /cannot tell the signing region for db\.corp\.example.*--region/ });
  t.match(await run([]), { code: 2, stderr: /Not enough non-option arguments/ });
  t.match(await run([db.endpoint, '--max-connections', '0']), { code: 2, stderr: /--max-connections/ });
  t.match(await run([db.endpoint, '--startup-timeout', '-1']), { code: 2, stderr: /--startup-timeout/ });
  t.match(await run([db.endpoint, '--bogus']), { code: 2, stderr: /Unknown argument: bogus/ });
  t.match(await run([db.endpoint, '--ca-file', '/nonexistent.pem']), { code: 1, stderr: /--ca-file \/nonexistent\.pem/ });
  const busy = createServer().listen(0, '127.0.0.1');
  await once(busy, 'listening');
  const port = (busy.address() as { port: number }).port;
  t.match(await run([db.endpoint, '--listen', `127.0.0.1:${port}`, '--log-format', 'json']), { code: 1, stderr: /address in use/ });
  t.match(await run([db.endpoint, '--listen', `127.0.0.1:${port}`, '--log-format', 'pretty']), { code: 1, stderr: /FATAL.*cannot listen: address in use/ });
  busy.close();
  t.match(await run(['--help']), { code: 0 });
});
