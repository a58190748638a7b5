// Transaction pooling against the real database: a server is held for one transaction at a time, named
// prepared statements follow their client from server to server, the extended protocol's pipelines
// (errors up to Sync, Flush, COPY) come through whole, cancels reach only the server held now.
import t from 'tap';
import pg from 'pg';
import postgres from 'postgres';
import { serialize } from 'pg-protocol';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestDb } from './support/testdb.js';
import { runPg, startProxy, type TestProxy } from './support/proxy.js';
import { jdbcSkip, runJdbc } from './support/jdbc.js';
import type { PoolSettings } from '../src/pool/pool.js';
import { WireClient, errorOf } from './support/wire.js';
import { startupBytes, cancelRequest } from './support/bytes.js';

const db = await startTestDb();
t.teardown(() => db.destroy());

const TRANSACTION: PoolSettings = {
  mode: 'transaction',
  size: 4,
  maxServers: undefined,
  waitTimeoutMs: 10_000,
  idleTimeoutMs: 600_000,
  lifetimeMs: 3_600_000,
  resetQuery: 'DISCARD ALL',
  maxPreparedStatements: 200,
};
const pooled = (settings: Partial<PoolSettings> = {}) => startProxy(db, { pool: { ...TRANSACTION, ...settings } });
const env = (proxy: TestProxy, app: string) => ({
  PGHOST: '127.0.0.1',
  PGPORT: String(proxy.port),
  PGUSER: 'iam_user',
  PGDATABASE: 'orders',
  PGAPPNAME: app,
});
const backends = (app: string) =>
  db.admin(`SELECT count(*) FROM pg_stat_activity WHERE usename = 'iam_user' AND application_name = '${app}'`);

for (const protocol of ['prepared', 'extended', 'simple']) {
  t.test(`pgbench -M ${protocol}, 16 clients over a pool of 4: no errors, never more than 4 backends`, async (t) => {
    await using proxy = await pooled();
    const script = join(db.dir, `tx-${protocol}.sql`);
    await writeFile(
      script,
      '\\set id random(1, 1000)\nBEGIN;\nSELECT :id::int + 1;\nSELECT count(*) FROM pg_class WHERE oid > :id;\nEND;\nSELECT pg_backend_pid();\n',
    );
    const app = `pgbench-tx-${protocol}`;
    // A thread per client: pgbench prepares a statement with a blocking call, which would stall the other
    // clients of its thread while one of them holds a server (through any transaction pooler).
    const r = await runPg('pgbench', ['-n', '-M', protocol, '-c', '16', '-j', '16', '-t', '100', '-f', script], env(proxy, app));
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /number of transactions actually processed: 1600\/1600/);
    t.notMatch(r.stderr, /error/i);
    t.ok(Number(await backends(app)) <= 4, 'never more backends than the pool size');
  });
}

function client(proxy: TestProxy, extra: pg.ClientConfig = {}) {
  const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders', ...extra });
  c.on('error', () => undefined);
  return c;
}
const pid = async (c: pg.Client): Promise<number> => (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
const logins = async () => (await db.checkerLog()).filter((e) => e.user === 'iam_user').length;

t.test('node-postgres named queries: a statement prepared on one server runs on another', async (t) => {
  await using proxy = await pooled({ size: 2 });
  const before = await logins();
  const a = client(proxy, { application_name: 'named' });
  const holder = client(proxy, { application_name: 'named' });
  await a.connect();
  await holder.connect();
  const named = (n: number) => a.query({ name: 'double', text: 'SELECT $1::int * 2 AS twice, pg_backend_pid() AS pid', values: [n] });
  const first = (await named(1)).rows[0];
  t.equal(first.twice, 2);
  // The holder keeps the server the first query ran on: the next one must land on the other.
  await holder.query('BEGIN');
  t.equal(await pid(holder), first.pid, 'the holder took the only idle server');
  t.same(
    (await holder.query('SELECT name FROM pg_prepared_statements')).rows.map((r) => r.name),
    ['pg_iam_proxy_1'],
    "on the server the statement has the proxy's name, not the client's",
  );
  const second = (await named(21)).rows[0];
  t.equal(second.twice, 42, 'the statement ran on the second server');
  t.not(second.pid, first.pid);
  await holder.query('COMMIT');
  t.equal((await named(5)).rows[0].twice, 10, 'and on the first again');
  await a.end();
  await holder.end();
  t.ok((await logins()) - before <= 2, 'no more logins than servers');
});

/** A client speaking the protocol by hand, logged in through the proxy. */
async function wire(proxy: TestProxy, app: string): Promise<WireClient> {
  const w = await WireClient.connect(proxy.port);
  w.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: app }));
  const greeting = await w.untilReady();
  if (greeting.at(-1)?.code !== 'Z') throw new Error(`no greeting: ${JSON.stringify(greeting)}`);
  return w;
}
/** Backend messages up to and including the next ReadyForQuery (errors included). */
async function untilZ(w: WireClient): Promise<string[]> {
  const codes: string[] = [];
  for (;;) {
    const m = await w.message();
    if (!m) return codes;
    codes.push(m.code === 'E' ? `E:${errorOf(m)!.code}` : m.code);
    if (m.code === 'Z') return codes;
  }
}

t.test("pgbouncer's hard cases: a pipeline with an error and a late Sync, name reuse, a result type changed by DDL", async (t) => {
  await using proxy = await pooled({ size: 2 });
  await db.admin('CREATE TABLE tx_shape (a int); INSERT INTO tx_shape VALUES (1); GRANT SELECT ON tx_shape TO iam_user;', 'orders');
  const w = await wire(proxy, 'hard-cases');
  // One pipeline: a good statement, a bad one, and their uses, with the Sync sent only later.
  w.write(
    Buffer.concat([
      serialize.parse({ name: 'good', text: 'SELECT 1' }),
      serialize.bind({ statement: 'good' }),
      serialize.execute({}),
      serialize.parse({ name: 'bad', text: 'SELEC 2' }),
      serialize.bind({ statement: 'bad' }),
      serialize.execute({}),
      serialize.flush(),
    ]),
  );
  t.same([(await w.message())!.code, (await w.message())!.code, (await w.message())!.code], ['1', '2', 'D']);
  t.equal((await w.message())!.code, 'C');
  t.equal(errorOf(await w.message())?.code, '42601', 'the bad Parse fails, the rest waits for Sync');
  w.write(serialize.sync());
  t.same(await untilZ(w), ['Z']);
  // "bad" never came to be, "good" did; both as a direct connection would say.
  w.write(Buffer.concat([serialize.bind({ statement: 'bad' }), serialize.execute({}), serialize.sync()]));
  t.same(await untilZ(w), ['E:26000', 'Z'], 'the failed statement does not exist');
  w.write(Buffer.concat([serialize.bind({ statement: 'good' }), serialize.execute({}), serialize.sync()]));
  t.same(await untilZ(w), ['2', 'D', 'C', 'Z']);
  // Name reuse after Close, with other SQL.
  w.write(
    Buffer.concat([
      serialize.close({ type: 'S', name: 'good' }),
      serialize.parse({ name: 'good', text: "SELECT 'again'" }),
      serialize.bind({ statement: 'good' }),
      serialize.execute({}),
      serialize.sync(),
    ]),
  );
  const reused = [];
  for (;;) {
    const m = (await w.message())!;
    reused.push(m.code);
    if (m.code === 'D') t.match(m.bytes.toString(), /again/, 'the new SQL runs');
    if (m.code === 'Z') break;
  }
  t.same(reused, ['3', '1', '2', 'D', 'C', 'Z']);
  // DDL that changes a prepared statement's result type: the server's own error, then the client goes on.
  w.write(Buffer.concat([serialize.parse({ name: 'shape', text: 'SELECT * FROM tx_shape' }), serialize.sync()]));
  t.same(await untilZ(w), ['1', 'Z']);
  await db.admin('ALTER TABLE tx_shape ADD COLUMN b int', 'orders');
  w.write(Buffer.concat([serialize.bind({ statement: 'shape' }), serialize.execute({}), serialize.sync()]));
  const changed = await untilZ(w);
  // The server that has it says so; one that never had it prepares the new shape.
  t.ok(
    JSON.stringify(changed) === JSON.stringify(['E:0A000', 'Z']) || JSON.stringify(changed) === JSON.stringify(['2', 'D', 'C', 'Z']),
    `as PostgreSQL answers: ${changed}`,
  );
  w.write(serialize.query('SELECT 1'));
  t.same(await untilZ(w), ['T', 'D', 'C', 'Z'], 'the connection goes on');
  // A second Parse of a name in use: the server's own error, as on a direct connection; the client goes on
  // and its statement is the one it had.
  w.write(Buffer.concat([serialize.parse({ name: 'shape', text: 'SELECT 2' }), serialize.sync()]));
  const exists = errorOf(await w.message());
  t.match(exists, { code: '42P05', severity: 'ERROR', message: 'prepared statement "shape" already exists' });
  t.same(await untilZ(w), ['Z']);
  w.write(Buffer.concat([serialize.describe({ type: 'S', name: 'shape' }), serialize.sync()]));
  t.same(await untilZ(w), ['t', 'T', 'Z'], 'still the statement it prepared');
  w.close();
});

t.test(
  '--idle-transaction-timeout: a client idle in a transaction hears FATAL 25P03; its server is closed, the next client served',
  async (t) => {
    await using proxy = await pooled({ size: 1, idleTransactionTimeoutMs: 300 });
    const w = await wire(proxy, 'idle-tx');
    w.write(serialize.query('SELECT 1'));
    t.same(await untilZ(w), ['T', 'D', 'C', 'Z'], 'between transactions a client is never timed out');
    w.write(serialize.query('BEGIN'));
    t.same(await untilZ(w), ['C', 'Z']);
    const fatal = errorOf(await w.message());
    t.match(fatal, { code: '25P03', severity: 'FATAL', message: 'terminating connection due to idle-in-transaction timeout' });
    await w.closed;
    t.ok(await proxy.line((l) => l.msg === 'pool: server closed' && l.reason === 'the client left it busy'));
    const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], env(proxy, 'idle-tx'));
    t.equal(r.stdout.trim(), '1', 'the pool of one serves the next client');
  },
);

t.test(
  'two busy pools under --max-server-connections: servers stay with a busy pool, logins stay near the cap, neither starves',
  async (t) => {
    await using proxy = await pooled({ size: 2, maxServers: 2 });
    const before = (await db.checkerLog()).length;
    // Two pools (a setting that is not tracked keys the pool), three clients each, 60 transactions a client.
    const run = async (threshold: number) => {
      const c = client(proxy, { application_name: 'thrash', options: `-c geqo_threshold=${threshold}` });
      await c.connect();
      for (let i = 0; i < 60; i++) await c.query('SELECT 1');
      await c.end();
    };
    await Promise.all([run(11), run(11), run(11), run(12), run(12), run(12)]);
    const logins = (await db.checkerLog()).length - before;
    t.ok(logins <= 8, `${logins} IAM logins for 360 transactions over a cap of 2`);
    const evicted = proxy.logs().filter((l) => l.msg === 'pool: server closed' && /another pool needed room/.test(String(l.reason))).length;
    t.ok(evicted <= 6, `${evicted} evictions`);
  },
);

t.test('COPY in and out inside transaction pooling', async (t) => {
  await using proxy = await pooled({ size: 1 });
  await db.admin('CREATE TABLE tx_copy (n int, s text); GRANT INSERT, SELECT ON tx_copy TO iam_user;', 'orders');
  const rows = Array.from({ length: 5000 }, (_, i) => `${i}\trow ${i}`).join('\n');
  const copyIn = spawn('psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-c', '\\copy tx_copy FROM STDIN'], {
    env: { ...process.env, ...env(proxy, 'copy') },
  });
  copyIn.stdin.end(`${rows}\n`);
  let err = '';
  copyIn.stderr.on('data', (d) => (err += d));
  const [inCode] = await once(copyIn, 'exit');
  t.equal(inCode, 0, err);
  const out = await runPg('psql', ['-X', '-At', '-c', 'COPY (SELECT count(*), sum(n) FROM tx_copy) TO STDOUT'], env(proxy, 'copy'));
  t.equal(out.stdout.trim(), `5000\t${(4999 * 5000) / 2}`);
  const dump = await runPg('psql', ['-X', '-At', '-c', 'COPY tx_copy TO STDOUT'], env(proxy, 'copy'));
  t.equal(dump.stdout.trim(), rows, 'every row out as it went in');
  // A COPY the client abandons (CopyFail) ends in an error; the server goes back to the pool clean.
  const w = await wire(proxy, 'copy');
  w.write(serialize.query('COPY tx_copy FROM STDIN'));
  t.equal((await w.message())!.code, 'G');
  w.write(Buffer.concat([serialize.copyData(Buffer.from('1\tx\n')), serialize.copyFail('changed my mind')]));
  t.same(await untilZ(w), ['E:57014', 'Z']);
  w.write(serialize.query('SELECT count(*) FROM tx_copy'));
  t.same(await untilZ(w), ['T', 'D', 'C', 'Z']);
  w.close();
});

t.test('isolation: a session SET is undone before the next client; application_name and options hold per client', async (t) => {
  await using proxy = await pooled({ size: 1 });
  const a = client(proxy, { application_name: 'iso' });
  await a.connect();
  await a.query("SET TimeZone = 'Asia/Tokyo'");
  const server = await pid(a);
  await a.end();
  await proxy.line((l) => l.msg === 'pool: server idle');
  const b = client(proxy, { application_name: 'iso' });
  await b.connect();
  t.equal(await pid(b), server, 'the same server');
  t.equal((await b.query('SHOW TimeZone')).rows[0].TimeZone, 'UTC', "the other client's SET is gone");
  await b.end();
  const r = await runPg('psql', ['-X', '-At', '-c', "SELECT current_setting('application_name'), current_setting('TimeZone')"], {
    ...env(proxy, 'own-app'),
    PGOPTIONS: '-c TimeZone=Asia/Tokyo',
  });
  t.equal(r.stdout.trim(), 'own-app|Asia/Tokyo', r.stderr);
});

t.test('a reset that keeps prepared statements (RESET ALL): the proxy drops its own too, and prepares again', async (t) => {
  await using proxy = await pooled({ size: 1, resetQuery: 'RESET ALL' });
  const a = client(proxy, { application_name: 'reset-all' });
  await a.connect();
  const named = () => a.query({ name: 'n', text: 'SELECT 7 AS seven, pg_backend_pid() AS pid' });
  const first = (await named()).rows[0];
  await a.query("SET DateStyle = 'SQL, DMY'");
  await proxy.line((l) => l.msg === 'pool: server idle' && l.idle === 1);
  const second = (await named()).rows[0];
  t.equal(second.pid, first.pid, 'the same server, reset in between');
  t.equal(second.seven, 7, 'the statement was prepared on it again');
  t.same(
    (await a.query('SELECT name FROM pg_prepared_statements')).rows.map((r) => r.name),
    ['pg_iam_proxy_1'],
    'one statement: DEALLOCATE ALL ran with the reset',
  );
  t.equal((await a.query('SHOW DateStyle')).rows[0].DateStyle, 'SQL, DMY', "the client's own SET of a reported setting follows it");
  await a.end();
  const b = client(proxy, { application_name: 'reset-all' });
  await b.connect();
  t.equal((await b.query('SHOW DateStyle')).rows[0].DateStyle, 'ISO, MDY', 'the next client on the server has its own');
  await b.end();
});

t.test('a client killed mid-transaction: its server is closed; a server terminated while idle or held is never reused', async (t) => {
  await using proxy = await pooled({ size: 1 });
  const a = client(proxy, { application_name: 'killed' });
  await a.connect();
  await a.query('BEGIN');
  const held = await pid(a);
  a.connection.stream.destroy();
  await proxy.line((l) => l.msg === 'pool: server closed' && l.reason === 'the client left it busy');
  const b = client(proxy, { application_name: 'killed' });
  const bError = new Promise<Error>((resolve) => b.once('error', resolve));
  await b.connect();
  const idle = await pid(b);
  t.not(idle, held, 'a fresh server');
  await proxy.line((l) => l.msg === 'pool: server idle' && l.idle === 1);
  await db.admin(`SELECT pg_terminate_backend(${idle})`);
  await proxy.line((l) => l.msg === 'pool: server closed' && /terminated|closed while idle/.test(String(l.reason)));
  const third = await pid(b);
  t.not(third, idle, 'the client, still connected, gets another server');
  await b.query('BEGIN');
  await db.admin(`SELECT pg_terminate_backend(${third})`);
  t.match(await bError, { code: '57P01' }, 'terminated while held: the client hears it');
  await proxy.line((l) => l.msg === 'pool: server closed' && l.reason === 'it closed or was terminated while held');
});

t.test('drain: clients between transactions go at once, one in a transaction when it ends; idle servers close', async (t) => {
  const proxy = await pooled({ size: 2 });
  const idle = client(proxy, { application_name: 'drain' });
  const busy = client(proxy, { application_name: 'drain' });
  const idleError = new Promise<Error>((resolve) => idle.once('error', resolve));
  const busyError = new Promise<Error>((resolve) => busy.once('error', resolve));
  await idle.connect();
  await busy.connect();
  await idle.query('SELECT 1');
  await busy.query('BEGIN');
  await busy.query('CREATE TEMP TABLE d (x int) ON COMMIT DROP');
  const closed = proxy.close(60_000);
  t.match(await idleError, { code: '57P01', message: 'terminating connection: pg-iam-proxy is shutting down' });
  const commit = await busy.query('COMMIT');
  t.equal(commit.command, 'COMMIT', 'the open transaction commits');
  t.match(await busyError, { code: '57P01' }, 'then its client is let go');
  await closed;
  t.pass('the proxy stopped without waiting out the grace period');
  t.ok(proxy.logs().some((l) => l.msg === 'pool: server closed' && l.reason === 'shutting down'));
});

t.test('pool exhaustion: a client waits, then hears 53300 naming the pool', async (t) => {
  await using proxy = await pooled({ size: 1, waitTimeoutMs: 300 });
  const holder = client(proxy, { application_name: 'full' });
  await holder.connect();
  await holder.query('BEGIN');
  const other = client(proxy, { application_name: 'full' });
  await other.connect(); // the greeting needs no server
  const err = await other.query('SELECT 1').then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, { code: '53300', message: /no server free in the pool for user "iam_user", database "orders" within 0\.3 s/ });
  await holder.query('COMMIT');
  await holder.end();
});

t.test('cancel: it reaches the query of the server held now, and nothing when the client holds none', async (t) => {
  await using proxy = await pooled({ size: 1 });
  const idle = client(proxy, { application_name: 'cancel' });
  await idle.connect();
  await idle.query('SELECT 1');
  const busy = client(proxy, { application_name: 'cancel' });
  await busy.connect();
  const sleeping = busy.query('SELECT pg_sleep(0.3) AS slept');
  while ((await db.admin("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(0.3)%' AND state = 'active'")) !== '1') {
    await new Promise((r) => setTimeout(r, 10));
  }
  // The idle client's key: it holds no server, so its cancel must not touch the other client's query.
  const keyOf = (c: pg.Client) => {
    const k = c as unknown as { processID: number; secretKey: number };
    const secret = Buffer.alloc(4);
    secret.writeInt32BE(k.secretKey);
    return cancelRequest(k.processID, secret);
  };
  const stray = await WireClient.connect(proxy.port);
  stray.write(keyOf(idle));
  await stray.closed;
  t.match(await proxy.line((l) => l.msg === 'cancel request could not be forwarded'), { err: { message: /holds no server now/ } });
  t.match((await sleeping).rows[0], { slept: '' }, "the other client's query ran to its end");
  // The busy client's own cancel reaches its query.
  const long = busy.query('SELECT pg_sleep(30)');
  while ((await db.admin("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")) !== '1') {
    await new Promise((r) => setTimeout(r, 10));
  }
  const own = await WireClient.connect(proxy.port);
  own.write(keyOf(busy));
  await own.closed;
  t.match(await long.catch((e: Error) => e), { code: '57014' });
  t.equal((await busy.query('SELECT 1 AS one')).rows[0].one, 1, 'the client goes on');
  await idle.end();
  await busy.end();
});

t.test('postgres.js: prepared statements by default, many queries at once over more connections than servers', async (t) => {
  await using proxy = await pooled({ size: 2 });
  const sql = postgres({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'iam_user',
    database: 'orders',
    max: 6,
    prepare: true,
    onnotice: () => undefined,
  });
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => sql`SELECT ${i}::int + 1 AS n, ${`v${i % 7}`}::text AS s`));
  t.ok(
    results.every((r, i) => r[0]!.n === i + 1 && r[0]!.s === `v${i % 7}`),
    '200 queries, each its own answer',
  );
  const inTx = await sql.begin(async (tx) => {
    await tx`CREATE TEMP TABLE pjs (n int) ON COMMIT DROP`;
    await tx`INSERT INTO pjs SELECT generate_series(1, 10)`;
    return tx`SELECT sum(n)::int AS total FROM pjs`;
  });
  t.equal(inTx[0]!.total, 55, 'a transaction keeps its server throughout');
  t.ok(Number(await backends('postgres.js')) <= 2, 'six connections, two servers');
  await sql.end();
});

const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
t.test('psycopg 3: prepare=True across transactions and servers, and COPY', async (t) => {
  await using proxy = await pooled({ size: 2 });
  await db.admin('CREATE TABLE tx_pycopy (n int); GRANT INSERT, SELECT ON tx_pycopy TO iam_user;', 'orders');
  const script = `
import psycopg, sys
conns = [psycopg.connect(host='127.0.0.1', port=${proxy.port}, user='iam_user', dbname='orders', autocommit=True, prepare_threshold=0) for _ in range(4)]
total = 0
for i in range(50):
    c = conns[i % 4]
    total += c.execute('SELECT %s::int + 1', (i,), prepare=True).fetchone()[0]
    if i % 10 == 0:
        with c.cursor().copy('COPY tx_pycopy (n) FROM STDIN') as copy:
            for n in range(100):
                copy.write_row((n,))
total += conns[1].execute('SELECT count(*) FROM tx_pycopy').fetchone()[0]
print(total)
`;
  const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const p = spawn(python, ['-c', script]);
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ code, out, err }));
  });
  t.equal(r.code, 0, r.err);
  t.equal(r.out.trim(), String((49 * 50) / 2 + 50 + 500), 'the sums, and 500 rows copied in');
});

t.test('pgjdbc: prepareThreshold=1, server-side statements across transactions', { skip: jdbcSkip() }, async (t) => {
  await using proxy = await pooled({ size: 2 });
  const r = await runJdbc(
    db.dir,
    'Jdbc',
    proxy.port,
    `    long total = 0;
    Connection[] cs = new Connection[3];
    for (int i = 0; i < cs.length; i++) cs[i] = DriverManager.getConnection(url);
    for (int i = 0; i < 60; i++) {
      try (PreparedStatement ps = cs[i % 3].prepareStatement("SELECT ?::int + 1")) {
        ps.setInt(1, i);
        try (ResultSet rs = ps.executeQuery()) { rs.next(); total += rs.getInt(1); }
      }
    }
    Connection c = cs[0];
    c.setAutoCommit(false);
    PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2");
    for (int i = 0; i < 5; i++) { ps.setInt(1, i); ResultSet rs = ps.executeQuery(); rs.next(); total += rs.getInt(1); }
    c.commit();
    System.out.println(total);`,
  );
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), String((59 * 60) / 2 + 60 + 20));
});

t.test('through the CLI: --pool-mode transaction, pgbench -C, GET /pools', async (t) => {
  const { cleanAwsEnv, serveArgs, startCli } = await import('./support/cli.js');
  const cliEnv = cleanAwsEnv(db.dir, { AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey });
  const cli = await startCli(
    [...serveArgs(db), '--pool-mode', 'transaction', '--pool-size', '2', '--max-prepared-statements', '50', '--http', '127.0.0.1:0'],
    cliEnv,
  );
  t.teardown(() => void cli.child.kill('SIGKILL'));
  const before = await logins();
  const script = join(db.dir, 'tx-connect.sql');
  await writeFile(script, 'SELECT 1;\n');
  const r = await runPg('pgbench', ['-n', '-C', '-M', 'extended', '-c', '4', '-j', '4', '-t', '250', '-f', script], {
    PGHOST: '127.0.0.1',
    PGPORT: String(cli.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
    PGAPPNAME: 'cli-tx',
  });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /actually processed: 1000\/1000/);
  t.ok((await logins()) - before <= 2, '1,000 connects, at most pool-size logins');
  const http = Number(
    String((await cli.line((l) => l.msg === 'health and metrics listening')).http)
      .split(':')
      .at(-1),
  );
  const pools = (await (await fetch(`http://127.0.0.1:${http}/pools`)).json()) as Array<{ pools: Array<{ mode: string; size: number }> }>;
  t.match(pools[0]!.pools, [{ mode: 'transaction', size: 2 }]);
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});
