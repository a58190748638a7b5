// Session pooling against the real database: a connect reuses a logged-in server (no token, no login),
// a client's settings never reach the next client, a server left busy or dead is never handed on, the
// pool's size and wait are kept, cancels reach the server the client holds.
import t from 'tap';
import pg from 'pg';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestDb } from './support/testdb.js';
import { waitFor } from './support/poll.js';
import { runPg, startProxy, type TestProxy } from './support/proxy.js';
import type { PoolSettings } from '../src/pool/pool.js';

const db = await startTestDb();
t.teardown(() => db.destroy());

const SESSION: PoolSettings = {
  mode: 'session',
  size: 2,
  maxServers: undefined,
  waitTimeoutMs: 5_000,
  idleTimeoutMs: 600_000,
  lifetimeMs: 3_600_000,
  resetQuery: 'DISCARD ALL',
};
const pooled = (settings: Partial<PoolSettings> = {}) => startProxy(db, { pool: { ...SESSION, ...settings } });
/** A node pg client; an error event with no query running (a terminated backend) is expected in some cases. */
function client(proxy: TestProxy, extra: pg.ClientConfig = {}) {
  const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders', ...extra });
  c.on('error', () => undefined);
  return c;
}
/** Until the pool has parked a server `n` times (reset done, ready for the next client). */
async function parked(proxy: TestProxy, n = 1): Promise<void> {
  let seen = 0;
  await proxy.line((l) => l.msg === 'pool: server idle' && ++seen === n);
}
const logins = async () => (await db.checkerLog()).filter((e) => e.user === 'iam_user').length;
const backends = (app: string) =>
  db.admin(`SELECT count(*) FROM pg_stat_activity WHERE usename = 'iam_user' AND application_name = '${app}'`);

t.test('pgbench -C: 200 connects through the pool cost at most pool-size logins', async (t) => {
  await using proxy = await pooled();
  const before = await logins();
  const script = join(db.dir, 'pool-one.sql');
  await writeFile(script, 'SELECT 1;\n');
  const r = await runPg('pgbench', ['-n', '-C', '-c', '1', '-t', '200', '-f', script], {
    PGHOST: '127.0.0.1',
    PGPORT: String(proxy.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
    PGAPPNAME: 'pgbench-pooled',
  });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /number of transactions actually processed: 200\/200/);
  // A connect that comes while the last server is still being reset may open the pool's second one.
  const spent = (await logins()) - before;
  t.ok(spent >= 1 && spent <= SESSION.size, `IAM logins for 200 connections: ${spent} (pool size ${SESSION.size})`);
  t.ok(Number(await backends('pgbench-pooled')) <= SESSION.size, 'never more backends than the pool size');
  t.ok(proxy.logs().filter((l) => l.msg === 'session opened from the pool').length >= 200);
});

t.test('a client that comes while the last server is being reset waits for it; for a new one only past a short grace', async (t) => {
  await using quick = await pooled({ resetQuery: 'SELECT pg_sleep(0.1)' });
  const a = client(quick, { application_name: 'returning' });
  await a.connect();
  const pid = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  const before = await logins();
  await a.end(); // the reset (a tenth of a second) starts now
  const b = client(quick, { application_name: 'returning' });
  await b.connect();
  t.equal((await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid, pid, 'the server on its way back, reused');
  t.equal((await logins()) - before, 0, 'no login for the client that came during the reset');
  await b.end();

  // A reset slower than the grace: the client gets a new server while the old one still resets.
  await using slow = await pooled({ resetQuery: 'SELECT pg_sleep(5)' });
  const c = client(slow, { application_name: 'returning-slow' });
  await c.connect();
  const first = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  await c.end();
  const d = client(slow, { application_name: 'returning-slow' });
  await d.connect();
  const second = (await d.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  t.not(second, first, 'a new server');
  t.equal(await db.admin(`SELECT state FROM pg_stat_activity WHERE pid = ${first}`), 'active', 'served while the reset still ran');
  await d.end();
  // Both backends would sleep on in their resets into the next test.
  await db.admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${first}, ${second})`);
  await waitFor(async () => (await db.admin(`SELECT count(*) FROM pg_stat_activity WHERE pid IN (${first}, ${second})`)) === '0');
});

t.test("a client's session state is gone for the next client on the same server", async (t) => {
  await using proxy = await pooled();
  const a = client(proxy, { application_name: 'isolation' });
  await a.connect();
  const pid = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  await a.query("SET search_path = pg_catalog; SET statement_timeout = '7s'; CREATE TEMP TABLE leftover (x int); PREPARE p AS SELECT 1");
  await a.end();
  await parked(proxy);
  const b = client(proxy, { application_name: 'isolation' });
  await b.connect();
  const row = (
    await b.query(
      "SELECT pg_backend_pid() AS pid, current_setting('search_path') AS path, current_setting('statement_timeout') AS timeout, to_regclass('pg_temp.leftover') AS temp, (SELECT count(*) FROM pg_prepared_statements)::int AS prepared",
    )
  ).rows[0];
  t.equal(row.pid, pid, 'the same backend, reused');
  t.equal(row.path, '"$user", public', 'search_path back to its default');
  t.equal(row.timeout, '0', 'statement_timeout reset');
  t.equal(row.temp, null, 'the temp table is gone');
  t.equal(row.prepared, 0, 'no prepared statement left');
  await b.end();
});

t.test('startup parameters hold per client on one pool: a different TimeZone or application_name is SET, never a new server', async (t) => {
  await using proxy = await pooled({ size: 1 });
  const { WireClient } = await import('./support/wire.js');
  const { startupBytes } = await import('./support/bytes.js');
  const tokyo = client(proxy, { options: '-c TimeZone=Asia/Tokyo', application_name: 'tz' });
  await tokyo.connect();
  t.equal((await tokyo.query('SHOW TimeZone')).rows[0].TimeZone, 'Asia/Tokyo');
  const tokyoPid = (await tokyo.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  await tokyo.end();
  await parked(proxy);
  const plain = client(proxy, { application_name: 'tz-plain' });
  await plain.connect();
  const row = (
    await plain.query("SELECT current_setting('TimeZone') AS tz, current_setting('application_name') AS app, pg_backend_pid() AS pid")
  ).rows[0];
  t.same(row, { tz: 'UTC', app: 'tz-plain', pid: tokyoPid }, "the same server, with this client's settings, not the last one's");
  await plain.end();
  await parked(proxy, 2);
  // The greeting tells each client its own values, as the server spells them.
  const w = await WireClient.connect(proxy.port);
  w.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: 'tz-wire', TimeZone: 'asia/tokyo', DateStyle: 'sql' }));
  const greeting = await w.untilReady();
  const status = Object.fromEntries(
    greeting.filter((m) => m.code === 'S').map((m) => m.bytes.toString('utf8', 5, m.bytes.length - 1).split('\0')),
  );
  t.match(status, { application_name: 'tz-wire', TimeZone: 'Asia/Tokyo', DateStyle: 'SQL, MDY' });
  w.write(Buffer.from([0x58, 0, 0, 0, 4]));
  await w.closed;
  const r = await runPg('psql', ['-X', '-At', '-c', 'SHOW TimeZone'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(proxy.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
    PGAPPNAME: 'tz',
    PGOPTIONS: '-c TimeZone=Asia/Tokyo',
  });
  t.equal(r.stdout.trim(), 'Asia/Tokyo', `psql with PGOPTIONS: ${r.stderr}`);
  t.equal(Number(await db.admin("SELECT count(*) FROM pg_stat_activity WHERE usename = 'iam_user'")), 1, 'one server all along');
  // Reset after psql left, with psql's values set again for the next client like it: parked, idle.
  await parked(proxy, 3);
  t.equal(
    await db.admin("SELECT state FROM pg_stat_activity WHERE usename = 'iam_user' AND application_name = 'tz'"),
    'idle',
    "idle in the pool under the last client's name",
  );
});

t.test('60 connects with distinct application names through a pool of 1: one backend, each client its own name', async (t) => {
  await using proxy = await pooled({ size: 1 });
  const logins = (await db.checkerLog()).length;
  for (let i = 0; i < 60; i++) {
    const c = client(proxy, { application_name: `app-${i}` });
    await c.connect();
    t.equal((await c.query("SELECT current_setting('application_name') AS app")).rows[0].app, `app-${i}`);
    await c.end();
  }
  t.equal((await db.checkerLog()).length - logins, 1, 'one IAM login');
});

t.test("a value the server refuses: FATAL 22023 in the server's words, as at a direct login; the server stays usable", async (t) => {
  await using proxy = await pooled({ size: 1 });
  const bad = client(proxy, { options: '-c TimeZone=Mars/Olympus_Mons' });
  const err = await bad.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, { code: '22023', message: /invalid value for parameter "TimeZone": "Mars\/Olympus_Mons"/ });
  const good = client(proxy, { options: '-c TimeZone=Europe/Paris' });
  await good.connect();
  t.equal((await good.query('SHOW TimeZone')).rows[0].TimeZone, 'Europe/Paris');
  await good.end();
});

t.test('a client that leaves mid-transaction: its server is closed, never reused', async (t) => {
  await using proxy = await pooled();
  const a = client(proxy, { application_name: 'midtx' });
  await a.connect();
  const pid = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  await a.query('BEGIN');
  await a.query('CREATE TEMP TABLE half (x int)');
  a.connection.stream.destroy();
  await proxy.line((l) => l.msg === 'pool: server closed' && l.reason === 'the client left it busy');
  const b = client(proxy, { application_name: 'midtx' });
  await b.connect();
  t.not((await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid, pid, 'a fresh server');
  await b.end();
  while ((await db.admin(`SELECT count(*) FROM pg_stat_activity WHERE pid = ${pid}`)) !== '0') await new Promise((r) => setTimeout(r, 20));
  t.pass('the busy backend is gone');
});

t.test(
  '--idle-transaction-timeout in session mode: idle in a transaction or mid-message ends the client, idle outside is fine',
  async (t) => {
    await using proxy = await pooled({ size: 1, idleTransactionTimeoutMs: 300 });
    const { WireClient, errorOf } = await import('./support/wire.js');
    const { Bytes, startupBytes } = await import('./support/bytes.js');
    for (const [what, bytes] of [
      ['idle in a transaction', new Bytes().cstring('BEGIN').join('Q')],
      ['half a message', Buffer.from([0x51, 0, 0, 0, 40, 0x53])],
    ] as const) {
      const c = await WireClient.connect(proxy.port);
      c.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: 'idle-tx' }));
      t.equal((await c.untilReady()).at(-1)?.code, 'Z');
      c.write(bytes);
      const seen = [];
      for (let m = await c.message(); m; m = await c.message()) seen.push(m.code === 'E' ? errorOf(m) : m.code);
      t.match(seen.at(-1), { code: '25P03', severity: 'FATAL' }, what);
      t.ok(
        await proxy.line((l) => l.msg === 'pool: server closed' && l.reason === 'the client left it busy'),
        `${what}: its server closed`,
      );
    }
    const idle = client(proxy, { application_name: 'idle-tx' });
    await idle.connect();
    // Longer than the timeout, outside a transaction: nothing is to happen, so no event can be awaited.
    await new Promise((resolve) => setTimeout(resolve, 600));
    t.equal((await idle.query('SELECT 1 AS one')).rows[0].one, 1, 'idle between transactions is never timed out');
    await idle.end();
  },
);

t.test('a server terminated while idle is never handed out', async (t) => {
  await using proxy = await pooled();
  const a = client(proxy, { application_name: 'killed-idle' });
  await a.connect();
  const pid = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  await a.end();
  await parked(proxy);
  await db.admin(`SELECT pg_terminate_backend(${pid})`);
  await proxy.line((l) => l.msg === 'pool: server closed' && /terminated|closed while idle/.test(String(l.reason)));
  const b = client(proxy, { application_name: 'killed-idle' });
  await b.connect();
  t.not((await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid, pid);
  await b.end();
});

t.test('a server terminated while held: the client hears it, the server is not pooled', async (t) => {
  await using proxy = await pooled();
  const a = client(proxy, { application_name: 'killed-held' });
  const errored = new Promise<Error>((resolve) => a.on('error', resolve));
  await a.connect();
  const pid = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  await db.admin(`SELECT pg_terminate_backend(${pid})`);
  t.match(await errored, { code: '57P01' });
  await a.end().catch(() => undefined);
  await proxy.line((l) => l.msg === 'pool: server closed' && l.reason === 'it closed or was terminated while held');
  const b = client(proxy, { application_name: 'killed-held' });
  await b.connect();
  t.not((await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid, pid);
  await b.end();
});

t.test('a wait times out on the monotonic clock: a wall clock stepped back moves no deadline', async (t) => {
  await using proxy = await pooled({ size: 1, waitTimeoutMs: 300 });
  const holder = client(proxy, { application_name: 'clock' });
  await holder.connect();
  const refused = client(proxy, { application_name: 'clock' });
  const failing = refused.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  await proxy.line((l) => l.msg === 'pool: waiting for a server' && l.waiting === 1);
  // An administrator (or NTP) sets the clock an hour back while the client waits.
  const realNow = Date.now;
  Date.now = () => realNow() - 3_600_000;
  t.teardown(() => {
    Date.now = realNow;
  });
  const err = await failing;
  Date.now = realNow;
  t.match(err, { code: '53300' }, 'refused at its time, not an hour later');
  await holder.end();
});

t.test('the pool size holds; a client beyond waits, then gets the server released first', async (t) => {
  await using proxy = await pooled({ size: 1, waitTimeoutMs: 300 });
  const holder = client(proxy, { application_name: 'size' });
  await holder.connect();
  const refused = client(proxy, { application_name: 'size' });
  const err = await refused.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, {
    code: '53300',
    message: /no server free in the pool for user "iam_user", database "orders" within 0\.3 s/,
    hint: /--pool-size/,
  });
  const waiter = client(proxy, { application_name: 'size' });
  const waiting = waiter.connect();
  await proxy.line((l) => l.msg === 'pool: waiting for a server' && l.waiting === 1);
  await holder.end();
  await waiting;
  t.equal((await waiter.query('SELECT 1 AS one')).rows[0].one, 1, 'the waiting client got the released server');
  t.equal(await backends('size'), '1', 'never more than the pool size');
  await waiter.end();
});

t.test('a login refused while the pool has servers (a role connection limit): clients wait for those servers', async (t) => {
  await db.admin('ALTER ROLE iam_user CONNECTION LIMIT 2');
  t.teardown(() => db.admin('ALTER ROLE iam_user CONNECTION LIMIT -1'));
  await using proxy = await pooled({ size: 4 });
  const app = 'role-limit';
  const clients = Array.from({ length: 6 }, () => client(proxy, { application_name: app }));
  const results = await Promise.all(
    clients.map(async (c, i) => {
      await c.connect();
      const { rows } = await c.query(`SELECT ${i} AS i, pg_sleep(0.2)`);
      await c.end();
      return rows[0].i as number;
    }),
  );
  t.same(results, [0, 1, 2, 3, 4, 5], 'all 6 served by 2 servers');
  const failed = await proxy.line((l) => l.msg === "pool: a login for a new server failed; clients wait for the pool's servers");
  t.match(failed, { failures: Number, retryMs: Number }, 'the log says so, with the backoff');
  t.match(JSON.stringify(failed), /too many connections for role/, "with the server's words");
  t.ok(Number(await backends(app)) <= 2);
});

t.test("psql's Ctrl-C cancels the query on the server it holds, with the server's own key", async (t) => {
  await using proxy = await pooled();
  const psql = spawn('psql', ['-X', '-c', 'SELECT pg_sleep(30)'], {
    env: {
      ...process.env,
      PGHOST: '127.0.0.1',
      PGPORT: String(proxy.port),
      PGUSER: 'iam_user',
      PGDATABASE: 'orders',
      PGAPPNAME: 'pooled-cancel',
    },
  });
  let stderr = '';
  psql.stderr.on('data', (d) => (stderr += d));
  while (
    (await db.admin(
      "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active' AND application_name = 'pooled-cancel'",
    )) !== '1'
  ) {
    await new Promise((r) => setTimeout(r, 20));
  }
  psql.kill('SIGINT');
  const [code] = await once(psql, 'exit');
  t.equal(code, 1);
  t.match(stderr, /canceling statement due to user request/);
  t.ok(await proxy.line((l) => l.msg === 'cancel request forwarded'));
});

t.test('a login the server refuses after AuthenticationOk reaches the client as from a 1:1 login', async (t) => {
  await using proxy = await pooled();
  const err = await client(proxy, { database: 'nope' })
    .connect()
    .then(
      () => undefined,
      (e: pg.DatabaseError) => e,
    );
  t.match(err, { code: '3D000', message: /database "nope" does not exist/ });
  t.same(proxy.proxy.instances[0]!.pools!.snapshot(), [], 'no pool is kept for a login that failed');
});

const app = (l: Record<string, unknown>) => (l.startup as { application_name?: string } | undefined)?.application_name;

t.test('a server idle for long is checked before a client gets it', async (t) => {
  await using proxy = await pooled({ checkIdleAfterMs: 0 });
  for (const round of [1, 2]) {
    const c = client(proxy, { application_name: 'checked' });
    await c.connect();
    t.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1, `round ${round}`);
    await c.end();
    await parked(proxy, round);
  }
  t.equal(proxy.logs().filter((l) => l.msg === 'pool: server opened').length, 1, 'the checked server was reused');
});

t.test('lifetime, idle timeout and a failing reset retire servers', async (t) => {
  await using old = await pooled({ lifetimeMs: 0 }); // every server is past its lifetime when its client leaves
  const a = client(old, { application_name: 'lifetime' });
  await a.connect();
  await a.end();
  t.ok(await old.line((l) => l.msg === 'pool: server closed' && l.reason === 'server lifetime reached'));

  await using idle = await pooled({ idleTimeoutMs: 50 });
  const b = client(idle, { application_name: 'idle' });
  await b.connect();
  await b.end();
  t.ok(await idle.line((l) => l.msg === 'pool: server closed' && l.reason === 'server idle timeout'));

  // Parked, then past its lifetime while idle: the janitor closes it without waiting for a client.
  await using aging = await pooled({ lifetimeMs: 5_000 });
  const d = client(aging, { application_name: 'aging' });
  await d.connect();
  await d.end();
  await parked(aging);
  t.ok(await aging.line((l) => l.msg === 'pool: server closed' && l.reason === 'server lifetime reached'), 'closed while parked');

  await using failing = await pooled({ resetQuery: 'SELECT 1/0' });
  const c = client(failing, { application_name: 'reset' });
  await c.connect();
  await c.end();
  t.match(await failing.line((l) => l.msg === 'pool: server closed' && /^reset failed/.test(String(l.reason))), {
    reason: /division by zero/,
  });
});

t.test('a waiting client that leaves, and waiting clients at shutdown', async (t) => {
  const proxy = await pooled({ size: 1 });
  const holder = client(proxy, { application_name: 'wait-leave' });
  await holder.connect();
  const impatient = client(proxy, { application_name: 'wait-leave' });
  const impatientDone = impatient.connect().then(
    () => undefined,
    (e: Error) => e,
  );
  await proxy.line((l) => l.msg === 'pool: waiting for a server');
  impatient.connection.stream.destroy();
  await impatientDone;
  await proxy.line((l) => l.msg === 'session closed' && app(l) === 'wait-leave' && /client went away/.test(String(l.reason)));
  const late = client(proxy, { application_name: 'wait-leave' });
  const lateDone = late.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  let seen = 0;
  await proxy.line((l) => l.msg === 'pool: waiting for a server' && ++seen === 2);
  await Promise.all([proxy.close(1_000), holder.end()]);
  t.match(await lateDone, { code: '57P03', message: 'pg-iam-proxy is shutting down' }, 'a client still waiting at shutdown is told');
});

t.test('--max-server-connections bounds the servers of all pools together', async (t) => {
  await using proxy = await pooled({ size: 5, maxServers: 1, waitTimeoutMs: 1_500 });
  // Two pools: a setting that is not tracked keys the pool.
  const a = client(proxy, { application_name: 'max-a', options: '-c geqo_threshold=11' });
  await a.connect();
  const err = await client(proxy, { application_name: 'max-b', options: '-c geqo_threshold=12' })
    .connect()
    .then(
      () => undefined,
      (e: pg.DatabaseError) => e,
    );
  t.match(err, { code: '53300' }, 'another pool, but no server left for the instance');
  // A client of the other pool waiting when the server is released gets a server of its own.
  const b = client(proxy, { application_name: 'max-b', options: '-c geqo_threshold=12' });
  const waited = b.connect();
  let waits = 0;
  await proxy.line((l) => l.msg === 'pool: waiting for a server' && ++waits === 2);
  await a.end();
  await waited;
  t.equal((await b.query('SELECT 1 AS one')).rows[0].one, 1, 'served once the other pool made room');
  t.ok(await proxy.line((l) => l.msg === 'pool: server closed' && /another pool needed room/.test(String(l.reason))));
  await b.end();
});

t.test('the pooled relay with a real server: half-close with answers owed, garbage after login', async (t) => {
  await using proxy = await pooled();
  const { WireClient } = await import('./support/wire.js');
  const { Bytes, startupBytes } = await import('./support/bytes.js');
  const login = async (name: string) => {
    const c = await WireClient.connect(proxy.port);
    c.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: name }));
    t.equal((await c.untilReady()).at(-1)?.code, 'Z');
    return c;
  };
  // A client asking for protocol 3.2 of a PostgreSQL 15 server: negotiated down to 3.0 at the first login,
  // and every later client of the pool hears it too, with a 4-byte cancel key as 3.0 has.
  for (const round of [1, 2]) {
    const c = await WireClient.connect(proxy.port);
    c.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: 'v32' }, 196610));
    const greeting = await c.untilReady();
    t.equal(greeting[0]?.code, 'v', `round ${round}: NegotiateProtocolVersion first`);
    t.equal(greeting.find((m) => m.code === 'K')?.bytes.length, 1 + 4 + 4 + 4, `round ${round}: a 4-byte cancel key`);
    c.write(Buffer.from([0x58, 0, 0, 0, 4]));
    await c.closed;
    await parked(proxy, round);
  }
  // A client that leaves behind a query (a half-close counts: a pooled client's FIN ends its session): the
  // query is cancelled and its server closed at once, not when the query would have ended.
  const half = await login('relay');
  half.write(new Bytes().cstring('SELECT pg_sleep(60)').join('Q'));
  const sleeping = (state: string) => db.admin(`SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'${state}`);
  await waitFor(async () => (await sleeping(" AND state = 'active'")) === '1', 'the query to run');
  half.socket.end();
  await half.closed;
  t.ok(await proxy.line((l) => l.msg === 'pool: server closed' && l.reason === 'the client left it busy'));
  await waitFor(async () => (await sleeping('')) === '0', 'the backend to go');
  t.pass('the backend is gone: cancelled, not left to sleep');

  const garbage = await login('relay');
  garbage.write(Buffer.from([0x51, 0, 0, 0, 1]));
  await garbage.closed;
  t.ok(await proxy.line((l) => l.msg === 'session closed' && app(l) === 'relay' && /the client broke the protocol/.test(String(l.reason))));
});

t.test('through the CLI: --pool-mode session, GET /pools and the pool metrics', async (t) => {
  const { cleanAwsEnv, runCli, serveArgs, startCli } = await import('./support/cli.js');
  const env = cleanAwsEnv(db.dir, { AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey });
  const endpoint = `${db.endpoint}:${db.port}`;
  const args = serveArgs(db);
  const cli = await startCli([...args, '--pool-mode', 'session', '--pool-size', '1', '--http', '127.0.0.1:0', '--log-level', 'debug'], env);
  t.teardown(() => void cli.child.kill('SIGKILL'));
  const before = await logins();
  for (let i = 0; i < 3; i++) {
    const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
      PGHOST: '127.0.0.1',
      PGPORT: String(cli.port),
      PGUSER: 'iam_user',
      PGDATABASE: 'orders',
      PGAPPNAME: 'cli-pool',
    });
    t.equal(r.stdout.trim(), 'iam_user', r.stderr);
    let seen = 0;
    await cli.line((l) => l.msg === 'pool: server idle' && ++seen === i + 1);
  }
  t.equal((await logins()) - before, 1, 'three psql runs, one login');
  t.match(
    await cli.line((l) => l.msg === 'listening'),
    { poolMode: 'session', poolSize: 1, maxServerConnections: 2 },
    'the cap, shown at start',
  );
  // One client holds the pool's only server; the next waits for it.
  const holder = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders', application_name: 'cli-pool' });
  await holder.connect();
  const waiter = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders', application_name: 'cli-pool' });
  const waited = waiter.connect();
  await cli.line((l) => l.msg === 'pool: waiting for a server');
  await holder.end();
  await waited;
  await waiter.end();
  let parkedNow = 0;
  // Parked after each psql run (3), not when handed straight to the waiter, and after the waiter (4).
  await cli.line((l) => l.msg === 'pool: server idle' && ++parkedNow === 4);
  const http = Number(
    String((await cli.line((l) => l.msg === 'health and metrics listening')).http)
      .split(':')
      .at(-1),
  );
  const pools = (await (await fetch(`http://127.0.0.1:${http}/pools`)).json()) as Array<{ instance: string; pools: unknown[] }>;
  t.match(pools, [
    {
      instance: endpoint,
      pools: [
        {
          user: 'iam_user',
          database: 'orders',
          keyed: [],
          mode: 'session',
          size: 1,
          maxServers: 2,
          loginFailures: 0,
          servers: { idle: 1, active: 0, opening: 0 },
          clients: { active: 0, waiting: 0 },
        },
      ],
    },
  ]);
  const metrics = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
  const labels = `instance="${endpoint}",user="iam_user",database="orders"`;
  // One pool: psql and node pg send different startup packets (client_encoding, DateStyle...), SET per client.
  t.equal(pools[0]!.pools.length, 1);
  t.match(metrics, new RegExp(`^pg_iam_proxy_server_logins_total\\{${labels.replaceAll('.', '\\.')}\\} 1$`, 'm'));
  t.match(
    metrics,
    new RegExp(`^pg_iam_proxy_pool_servers\\{${labels.replaceAll('.', '\\.')},state="idle"\\} 1$`, 'm'),
    'the one pool of the user and database: its idle server',
  );
  t.match(metrics, /^pg_iam_proxy_pool_clients\{.*state="waiting"\} 0$/m);
  t.match(metrics, new RegExp(`^pg_iam_proxy_pool_wait_seconds_count\\{${labels.replaceAll('.', '\\.')}\\} 1$`, 'm'), 'one client waited');
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
  t.ok(
    cli.lines.some((l) => l.msg === 'pool: server closed' && l.reason === 'shutting down'),
    'the idle server closed at the drain',
  );
  t.match(await runCli([...args, '--pool-mode', 'transaction', '--max-prepared-statements', '0'], env), {
    code: 2,
    stderr: /--max-prepared-statements/,
  });
});
