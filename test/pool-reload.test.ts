// A reload that changes pool settings, through the real CLI and the test database: open sessions go on
// (a transaction mode client mid-transaction, one waiting for a server, a session mode client), the new
// settings serve new servers, and the old pools drain as their servers come back. A reload that changes
// only who may connect keeps the pools as they are.
import t from 'tap';
import pg from 'pg';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestDb } from './support/testdb.js';
import { closedPort } from './support/proxy.js';
import { cleanAwsEnv, startCli } from './support/cli.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const env = cleanAwsEnv(db.dir, { AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey });
const config = join(db.dir, 'pool-reload.yaml');
const write = (port: number, extra: string[]) =>
  writeFileSync(
    config,
    [
      'log: { format: json }',
      'instances:',
      `  - endpoint: ${db.endpoint}:${db.port}`,
      `    connectTo: 127.0.0.1:${db.port}`,
      `    caFile: ${db.caFile}`,
      `    listen: 127.0.0.1:${port}`,
      ...extra.map((line) => `    ${line}`),
      '',
    ].join('\n'),
  );
const client = (port: number, app: string) => {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'iam_user', database: 'orders', application_name: app });
  c.on('error', () => undefined);
  return c;
};

for (const mode of ['transaction', 'session'] as const) {
  t.test(`${mode} mode: a reload that changes the pool size keeps open sessions and waiting clients`, async (t) => {
    const port = await closedPort();
    write(port, [`poolMode: ${mode}`, 'poolSize: 1']);
    const cli = await startCli(['--config', config, '--log-level', 'debug'], env);
    t.teardown(() => void cli.child.kill('SIGKILL'));
    const a = client(port, `reload-${mode}`);
    await a.connect();
    await a.query('BEGIN');
    await a.query('SELECT 1');
    // B waits: the one server is A's until A's transaction ends (and, in session mode, its session).
    const b = client(port, `reload-${mode}`);
    const bConnected = b.connect();
    const bAnswer = bConnected.then(() => b.query('SELECT 2 AS two'));
    await cli.line((l) => l.msg === 'pool: waiting for a server');

    write(port, [`poolMode: ${mode}`, 'poolSize: 3']);
    cli.child.kill('SIGHUP');
    t.match(await cli.line((l) => l.msg === 'configuration reloaded'), { changed: [`${db.endpoint}:${db.port}`] });
    t.equal((await bAnswer).rows[0].two, 2, 'the waiting client is served by the new pool');
    t.equal((await a.query('SELECT 3 AS three')).rows[0].three, 3, 'the open transaction goes on');
    await a.query('COMMIT');
    t.equal((await a.query('SELECT 4 AS four')).rows[0].four, 4, 'and so do the next ones');
    await a.end();
    t.ok(
      await cli.line((l) => l.msg === 'pool: server closed' && /reloaded|shutting down/.test(String(l.reason))),
      "the old pool's server is closed when it comes back",
    );
    await b.end();
    cli.child.kill('SIGTERM');
    t.equal(await cli.exit, 0);
  });
}

t.test('a reload that changes only allowUsers keeps the pools and their servers', async (t) => {
  const port = await closedPort();
  write(port, ['poolMode: session', 'poolSize: 1']);
  const cli = await startCli(['--config', config, '--log-level', 'debug'], env);
  t.teardown(() => void cli.child.kill('SIGKILL'));
  let sessions = 0;
  const pid = async () => {
    const c = client(port, 'reload-users');
    await c.connect();
    const p = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    await c.end();
    const n = ++sessions;
    let seen = 0;
    await cli.line((l) => l.msg === 'pool: server idle' && ++seen === n);
    return p;
  };
  const before = await pid();
  write(port, ['poolMode: session', 'poolSize: 1', 'allowUsers: [iam_user, someone_else]']);
  cli.child.kill('SIGHUP');
  await cli.line((l) => l.msg === 'configuration reloaded');
  t.equal(await pid(), before, 'the same pooled server after the reload');
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});
