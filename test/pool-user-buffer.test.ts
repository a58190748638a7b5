// Servers of transaction pooling read into buffers of their own (src/pool/server.ts): the relay that holds
// a server handles each read at once, in that buffer. These tests hold it to what that must never do: reuse a buffer a
// write to a slow client still holds, let a read overtake bytes the socket's stream still holds (a paused
// server), or hand a read to a relay that no longer holds the server.
import t from 'tap';
import pg from 'pg';
import { createHash } from 'node:crypto';
import { readPath, reads } from '../src/net/user-buffer.js';
import type { PoolMode } from '../src/pool/pool.js';
import { serialize } from 'pg-protocol';
import { once } from 'node:events';
import { Bytes, startupBytes } from './support/bytes.js';
import { pooling } from './support/differential.js';
import { PgConn } from './support/pgwire.js';
import { startProxy } from './support/proxy.js';
import { startTestDb } from './support/testdb.js';
import { stalledReader } from './support/wire.js';

const db = await startTestDb();
t.teardown(() => db.destroy());

t.test(`Node ${process.version}: the fast path is there for pooled servers and clients`, async (t) => {
  t.equal(readPath().kind, 'user-buffer');
});

for (const mode of ['transaction', 'session'] as const satisfies readonly PoolMode[]) {
  t.test(`${mode} mode: a client that stops reading gets every byte, in order; another client's rows stay its own`, async (t) => {
    await using proxy = await startProxy(db, { pool: pooling(mode, 2) });
    const before = { ...reads };
    // The backend blocks once the proxy stops taking its rows: the proxy's writes to the stalled client
    // wait, holding a read's buffer, and the server is paused (its stream keeps what TLS still decrypts).
    const reader = await stalledReader(t, db, proxy.port, `pool-ub-slow-${mode}`, 30_000);
    if (mode === 'transaction') {
      while (reads.held === before.held) await db.admin('SELECT 1');
      t.pass('a write to the stalled client held a buffer: the next read went elsewhere');
    }
    // Meanwhile another client's queries, on the pool's other server, get their own rows.
    const other = await PgConn.proxy(proxy.port, { user: 'iam_user', database: 'orders', application_name: `pool-ub-slow-${mode}-other` });
    for (let i = 0; i < 20; i++) {
      const r = await other.query(`SELECT ${i} AS n, repeat('y', ${i * 500}) AS pad`);
      const row = r.msgs.find((m) => m.code === 'D')!;
      const n = row.bytes.readInt32BE(7);
      t.same([row.bytes.toString('utf8', 11, 11 + n), row.bytes.readInt32BE(11 + n)], [String(i), i * 500], `query ${i}: its own row`);
    }
    await other.end();
    // All that while the proxy read no further than its stream's mark: a paused server's socket takes the
    // few records TLS had decrypted, then stops, and the backend still waits to write.
    const app = `pool-ub-slow-${mode}`;
    t.equal(
      await db.admin(`SELECT wait_event FROM pg_stat_activity WHERE application_name = '${app}' AND state = 'active'`),
      'ClientWrite',
      'the backend is still held back',
    );
    t.ok(reads.copied - before.copied < 100, `${reads.copied - before.copied} reads copied while paused: bounded`);
    await reader.finish();
    // Session mode reads through the stream (src/pool/pool.ts says why): the same bytes either way.
    if (mode === 'transaction') t.ok(reads.userBuffer > before.userBuffer, 'the server reads landed in its own buffers');
    else t.equal(reads.userBuffer, before.userBuffer, 'session mode: through the stream');
  });
}

t.test('transaction mode: reads after the relay gave its server back reach the next client, not the one before', async (t) => {
  // One server, two clients taking turns, each reply checked as its own: the server changes hands at
  // every ReadyForQuery, between one read and the next.
  await using proxy = await startProxy(db, { pool: pooling('transaction', 1) });
  const a = await PgConn.proxy(proxy.port, { user: 'iam_user', database: 'orders', application_name: 'turns-a' });
  const b = await PgConn.proxy(proxy.port, { user: 'iam_user', database: 'orders', application_name: 'turns-b' });
  const ask = async (conn: PgConn, who: string, i: number) => {
    const r = await conn.query(`SELECT '${who}${i}' || repeat('.', ${(i * 997) % 20_000}) AS v`);
    const row = r.msgs.find((m) => m.code === 'D');
    return row?.bytes.toString('utf8', 11, 11 + who.length + String(i).length);
  };
  let mixed = 0;
  for (let i = 0; i < 100; i++) {
    const [x, y] = await Promise.all([ask(a, 'a', i), ask(b, 'b', i)]);
    if (x !== `a${i}` || y !== `b${i}`) mixed++;
  }
  t.equal(mixed, 0, 'every reply to the client that asked');
  await a.end();
  await b.end();
});

t.test("transaction mode: a plain client's reads share one buffer; what waits for a server is its own copy", async (t) => {
  // A pool of one, held by a in a transaction: b's queries come while it waits for the server (kept),
  // and other clients' reads land in the shared buffer meanwhile. Each of b's must arrive as it sent it.
  await using proxy = await startProxy(db, { pool: pooling('transaction', 1) });
  const a = await PgConn.proxy(proxy.port, { user: 'iam_user', database: 'orders', application_name: 'holds' });
  const b = await PgConn.proxy(proxy.port, { user: 'iam_user', database: 'orders', application_name: 'queues' });
  t.same(
    (await a.query('BEGIN')).msgs.map((m) => m.code),
    ['C', 'Z'],
  );
  const before = { ...reads };
  const queries = Array.from({ length: 20 }, (_, i) =>
    new Bytes().cstring(`SELECT ${i} AS n, '${String(i).repeat(i * 50)}' AS pad`).join('Q'),
  );
  for (const q of queries) await b.write(q);
  // a's reads (in the shared buffer, over what b sent) while b waits.
  for (let i = 0; i < 5; i++) t.equal((await a.query(`SELECT ${100 + i}`)).msgs.length, 4);
  await a.query('COMMIT');
  for (let i = 0; i < queries.length; i++) {
    const r = await b.until('Z', 10_000);
    const row = r.msgs.find((m) => m.code === 'D')!;
    const n = row.bytes.readInt32BE(7);
    t.same(
      [row.bytes.toString('utf8', 11, 11 + n), row.bytes.readInt32BE(11 + n)],
      [String(i), String(i).length * i * 50],
      `query ${i}: as b sent it`,
    );
  }
  t.ok(reads.userBuffer > before.userBuffer, 'client reads landed in the shared buffer');
  await a.end();
  await b.end();
});

t.test('transaction mode: COPY FROM STDIN while the server takes nothing for a while: every byte, in order', async (t) => {
  // The COPY waits on a row lock (another transaction inserted its first key): the proxy stops reading the
  // client, then reads on into the shared buffer once the lock is gone.
  await db.admin('CREATE TABLE pub_in (i int PRIMARY KEY, t text); GRANT INSERT, SELECT ON pub_in TO iam_user;', 'orders');
  await using proxy = await startProxy(db, { pool: pooling('transaction', 1) });
  await using unpooled = await startProxy(db);
  const blocker = await PgConn.proxy(unpooled.port, { user: 'iam_user', database: 'orders', application_name: 'blocker' });
  await blocker.query('BEGIN');
  await blocker.query("INSERT INTO pub_in VALUES (1, 'x')");
  const c = await PgConn.proxy(proxy.port, { user: 'iam_user', database: 'orders', application_name: 'copies' });
  await c.write(new Bytes().cstring('COPY pub_in FROM STDIN').join('Q'));
  const ready = await c.next(10_000);
  t.equal(typeof ready === 'string' ? ready : ready.code, 'G', 'CopyInResponse');
  const ROWS = 100_000;
  const rows: Buffer[] = [];
  for (let i = 1; i <= ROWS; i++) rows.push(new Bytes().raw(Buffer.from(`${i}\t${'z'.repeat(i % 200)}${i}\n`)).join('d'));
  // Rows enough for the COPY to insert its first batch (it buffers up to 1,000): it then waits on the lock
  // over row 1.
  const FIRST = 2_000;
  await c.write(Buffer.concat(rows.slice(0, FIRST)));
  for (;;) {
    const waits = await db.admin("SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'copies' AND state = 'active'");
    if (waits === 'Lock') break;
  }
  // Small writes, each likely a read of its own, then the rest at once (most of it waits in the sockets).
  let next = FIRST;
  for (let k = 0; k < 200; k++, next += 20) await c.write(Buffer.concat(rows.slice(next, next + 20)));
  const sent = c.write(Buffer.concat([...rows.slice(next), new Bytes().join('c')]));
  await blocker.query('ROLLBACK');
  await sent;
  const r = await c.until('Z', 60_000);
  t.same(
    r.msgs.map((m) => m.code),
    ['C', 'Z'],
  );
  const sum = await db.admin(`SELECT count(*) || ' ' || sum(i) || ' ' || bool_and(t = repeat('z', i % 200) || i) FROM pub_in`, 'orders');
  t.equal(sum, `${ROWS} ${(ROWS * (ROWS + 1)) / 2} true`, 'every row, as sent');
  await c.end();
  await blocker.end();
});

t.test("transaction mode, a TLS client: its writes take a read's bytes as they are made; every row intact", async (t) => {
  await using proxy = await startProxy(db, { pool: pooling('transaction', 1) });
  const before = { ...reads };
  const client = new pg.Client({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'iam_user',
    database: 'orders',
    ssl: { rejectUnauthorized: false },
  });
  await client.connect();
  const rows = 20_000;
  const sql = `SELECT i, repeat(md5(i::text), 32) AS r FROM generate_series(1, ${rows}) i`;
  const got = await client.query<{ i: number; r: string }>(sql);
  const expected = await db.admin(`SELECT encode(sha256(convert_to(string_agg(r, '' ORDER BY i), 'UTF8')), 'hex') FROM (${sql}) q`);
  t.equal(
    createHash('sha256')
      .update(got.rows.map((row) => row.r).join(''))
      .digest('hex'),
    expected,
    'every byte, in order',
  );
  t.same(got.rows.at(-1)?.i, rows);
  // SSL_write copies what it encrypts: a server read's buffer is used again unless a write was queued.
  const served = reads.userBuffer - before.userBuffer;
  t.ok(served > 100, `${served} server reads in its own buffer, ${reads.held - before.held} of them held`);
  await client.end();
});

t.test('transaction mode: a client whose first bytes leave a message held is not read on meanwhile', async (t) => {
  // Its first bytes, pipelined behind the startup, go to an idle server at once, and the last of them (a
  // Parse of a name whose Close is not answered yet) is held; the INSERT before it waits on a row lock.
  // Everything the client sends after must wait in the sockets, not in the proxy.
  await db.admin('CREATE TABLE pub_hold (i int PRIMARY KEY); GRANT INSERT ON pub_hold TO iam_user;', 'orders');
  await using proxy = await startProxy(db, { pool: pooling('transaction', 1) });
  await using unpooled = await startProxy(db);
  const blocker = await PgConn.proxy(unpooled.port, { user: 'iam_user', database: 'orders', application_name: 'hold-blocker' });
  await blocker.query('BEGIN');
  await blocker.query('INSERT INTO pub_hold VALUES (1)');
  // The pool's one server, logged in and idle: the next client is lent it as its first bytes come.
  const warm = await PgConn.proxy(proxy.port, { user: 'iam_user', database: 'orders' });
  await warm.query('SELECT 1');
  const c = PgConn.open(proxy.port);
  await once(c.socket, 'connect');
  const first = [
    serialize.query('INSERT INTO pub_hold VALUES (1)'),
    serialize.parse({ name: 's1', text: 'SELECT 1', types: [] }),
    serialize.sync(),
    serialize.close({ type: 'S', name: 's1' }),
    serialize.sync(),
    serialize.parse({ name: 's1', text: 'SELECT 2', types: [] }),
    serialize.sync(),
  ];
  void c.write(Buffer.concat([startupBytes({ user: 'iam_user', database: 'orders', application_name: 'held-first' }), ...first]));
  // Then 32 MB of queries: more than the sockets between here and the proxy hold.
  const big = serialize.query(`SELECT 1 -- ${'x'.repeat(1024 * 1024)}`);
  for (let i = 0; i < 32; i++) void c.write(big);
  const live = () => proxy.proxy.instances[0]!.liveBytes().fromClient;
  for (;;) {
    const before = live();
    const waits = await db.admin("SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'held-first' AND state = 'active'");
    if (waits === 'Lock' && live() === before && c.socket.writableLength > 0) break;
  }
  t.pass('the proxy stopped reading the client while its message was held');
  await blocker.query('ROLLBACK');
  // Then every answer, in order: the greeting, the INSERT, Parse, Close, Parse (each with its Sync), the queries.
  let codes = '';
  for (let z = 0; z < 1 + 4 + 32; ) {
    const m = await c.next(30_000);
    if (typeof m === 'string') break;
    codes += m.code;
    if (m.code === 'Z') z++;
  }
  t.equal(codes.slice(codes.indexOf('Z') + 1), `CZ1Z3Z1Z${'TDCZ'.repeat(32)}`, 'every answer, in order');
  await c.end();
  await warm.end();
  await blocker.end();
});
