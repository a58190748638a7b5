// What a client can send before it is authenticated (docs/protocol.md B1-B11), cancel routing, limits.
import t from 'tap';
import pg from 'pg';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { startTestDb } from './support/testdb.js';
import { startProxy } from './support/proxy.js';
import { Bytes, cancelRequest, gssencRequest, sslRequest, startupBytes, startupPairs } from './support/bytes.js';
import { errorOf, WireClient } from './support/wire.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
// --client-tls off: these cases are about the plaintext negotiation (client-tls.test covers TLS).
const proxy = await startProxy(db, {
  maxConnections: 3,
  startupTimeoutMs: 400,
  clientTls: 'off',
  allowUsers: ['iam_user'],
  allowDatabases: ['orders', 'nope'],
});
t.teardown(() => proxy.close());

/** Each case: bytes sent, then either a FATAL with this SQLSTATE or a silent close. None signs or dials. */
const cases: Array<[string, Buffer, string | null]> = [
  ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), null],
  ['random bytes', Buffer.from('9f3c2a1b77e0d4c8', 'hex'), null],
  ['a negative length', Buffer.from([0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0]), null],
  ['an oversize packet', Buffer.from([0, 1, 0, 0]), null],
  ['a TLS ClientHello (direct TLS, local TLS off)', Buffer.from([0x16, 3, 1, 0, 0x10]), null],
  ['protocol 2.0', startupBytes({ user: 'iam_user' }, 0x00020000), '0A000'],
  ['no final NUL', new Bytes().uint32(196608).cstring('user').cstring('iam_user').join(), '08P01'],
  ['no user', startupBytes({ database: 'orders' }), '28000'],
  ['a 64-byte user', startupBytes({ user: 'u'.repeat(64) }), '42622'],
  ['a replication connection', startupBytes({ user: 'iam_user', replication: 'database' }), '0A000'],
  ['SSLRequest twice', Buffer.concat([sslRequest(), sslRequest()]), '08P01'],
  ['a cancel request with a 2-byte key', new Bytes().uint32(80877102).int32(1).raw([1, 2]).join(), '08P01'],
  // PostgreSQL takes the last of a repeated parameter: each of these would have slipped past a check.
  [
    'database twice (past --allow-database)',
    startupPairs([
      ['user', 'iam_user'],
      ['database', 'orders'],
      ['database', 'postgres'],
    ]),
    '08P01',
  ],
  [
    'user twice (past --allow-user)',
    startupPairs([
      ['user', 'iam_user'],
      ['database', 'orders'],
      ['user', 'pw_user'],
    ]),
    '08P01',
  ],
  [
    'replication twice (past the refusal)',
    startupPairs([
      ['user', 'iam_user'],
      ['replication', 'false'],
      ['replication', 'database'],
    ]),
    '08P01',
  ],
];

t.test('malformed startups: a clear FATAL or a close, and no upstream work', async (t) => {
  const attempts = (await db.checkerLog()).length;
  for (const [name, bytes, code] of cases) {
    const c = await WireClient.connect(proxy.port);
    c.write(bytes);
    let reply = await c.rest();
    // An SSLRequest is answered 'N' first.
    if (bytes.subarray(4, 8).equals(sslRequest().subarray(4, 8))) {
      t.equal(reply[0], 0x4e, `${name}: SSLRequest declined`);
      reply = reply.subarray(1);
    }
    if (code === null) t.equal(reply.length, 0, `${name}: closed without a word`);
    else t.match(errorOf({ code: String.fromCharCode(reply[0]!), bytes: reply }), { severity: 'FATAL', code }, `${name}: FATAL ${code}`);
  }
  t.equal(proxy.issued.length, 0, 'no token signed');
  t.equal((await db.checkerLog()).length, attempts, 'nothing reached the database');
});

t.test('with --client-tls off, SSLRequest and GSSENCRequest are declined, then the startup proceeds', async (t) => {
  const c = await WireClient.connect(proxy.port);
  c.write(gssencRequest());
  t.same(await c.bytes(1), Buffer.from('N'));
  c.write(sslRequest());
  t.same(await c.bytes(1), Buffer.from('N'));
  c.write(startupBytes({ user: 'iam_user', database: 'orders' }));
  t.equal((await c.untilReady()).at(-1)!.code, 'Z');
  c.close();
});

t.test('a client that stalls in its startup is closed at --startup-timeout', async (t) => {
  const c = await WireClient.connect(proxy.port);
  c.write(startupBytes({ user: 'iam_user' }).subarray(0, 6));
  const err = errorOf(await c.message());
  t.match(err, { code: '08P01', message: /did not complete its startup within 0\.4 s/ });
  await c.closed;
});

t.test('--max-connections: the surplus client gets 53300, the others work', async (t) => {
  const held = await Promise.all(
    [0, 1, 2].map(async () => {
      const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
      await c.connect();
      return c;
    }),
  );
  const extra = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  const err = await extra.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, { code: '53300', message: /too many clients already/ });
  await held[0]!.end();
  // The freed slot is visible once the proxy has seen the close: wait for the session-closed line.
  while (proxy.proxy.instances[0]!.connections > 2) await new Promise((r) => setImmediate(r));
  const again = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  await again.connect();
  t.equal((await again.query('SELECT 1 AS one')).rows[0].one, 1);
  await Promise.all([again, held[1]!, held[2]!].map((c) => c.end()));
});

t.test("psql's Ctrl-C cancels the running query through the proxy", async (t) => {
  const psql = spawn('psql', ['-X', '-c', 'SELECT pg_sleep(30)'], {
    env: { ...process.env, PGHOST: '127.0.0.1', PGPORT: String(proxy.port), PGUSER: 'iam_user', PGDATABASE: 'orders' },
  });
  let stderr = '';
  psql.stderr.on('data', (d) => (stderr += d));
  // Wait until the server runs the query, then interrupt psql as a terminal's Ctrl-C would.
  while ((await db.admin("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")) !== '1') {
    await new Promise((r) => setTimeout(r, 20));
  }
  psql.kill('SIGINT');
  const [code] = await once(psql, 'exit');
  t.equal(code, 1);
  t.match(stderr, /canceling statement due to user request/);
  // psql hears the cancel's effect before the proxy sees the server close the cancel connection.
  t.ok(await proxy.line((l) => l.msg === 'cancel request forwarded'));
});

t.test('a cancel request with an unknown key goes nowhere and gets no reply', async (t) => {
  const c = await WireClient.connect(proxy.port);
  c.write(cancelRequest(12345, Buffer.from('deadbeef', 'hex')));
  t.equal((await c.rest()).length, 0);
  t.ok(proxy.logs().some((l) => l.msg === 'cancel request for an unknown key: dropped'));
});

t.test('a client that hangs up during login does not disturb the proxy', async (t) => {
  const c = await WireClient.connect(proxy.port);
  c.write(startupBytes({ user: 'iam_user', database: 'orders' }));
  c.close();
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  await client.connect();
  t.equal((await client.query('SELECT 2 AS two')).rows[0].two, 2);
  await client.end();
});
