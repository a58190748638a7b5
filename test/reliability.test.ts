// Reliability: every socket, timer and listener released on every path; the database restarting under
// open sessions; a flood of half-open connections bounded in memory and closed at the startup timeout.
import t from 'tap';
import pg from 'pg';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { startTestDb } from './support/testdb.js';
import { runPg, startProxy } from './support/proxy.js';
import { cancelRequest, gssencRequest, sslRequest, startupBytes } from './support/bytes.js';
import { WireClient } from './support/wire.js';

const db = await startTestDb();
t.teardown(() => db.destroy());

/** Open handles by kind (sockets, servers, timers), as Node counts them. */
const handles = () => {
  const counts: Record<string, number> = {};
  // The harness's own child-process pipes and the polling below are not the proxy's.
  for (const kind of process.getActiveResourcesInfo())
    if (kind !== 'PipeWrap' && kind !== 'ProcessWrap' && kind !== 'Immediate') counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
};
const fds = () => readdirSync('/proc/self/fd').length;

/** Resolves when the proxy holds no client connection. */
async function drained(proxy: Awaited<ReturnType<typeof startProxy>>) {
  const instance = proxy.proxy.instances[0]!;
  while (instance.connections > 0) await new Promise((r) => setImmediate(r));
}

t.test('every path releases its sockets and timers: handle counts return to the baseline', async (t) => {
  const proxy = await startProxy(db, { startupTimeoutMs: 300, maxConnections: 50 });
  t.teardown(() => proxy.close());
  const env = { PGHOST: '127.0.0.1', PGPORT: String(proxy.port), PGDATABASE: 'orders' };
  await runPg('psql', ['-X', '-c', 'SELECT 1'], { ...env, PGUSER: 'iam_user' }); // warm: token, TLS contexts
  await drained(proxy);
  // The warm session's upstream socket closes a turn or two after its client: the baseline holds none.
  for (let i = 0; i < 1000 && handles().TCPSocketWrap !== undefined; i++) await new Promise((r) => setImmediate(r));
  const before = { handles: handles(), fds: fds() };
  t.equal(before.handles.TCPSocketWrap, undefined, 'no socket open at the baseline');

  // A mixed workload: success, TLS to the client, refused users, bad input, a stall, a cancel, resets.
  await runPg('psql', ['-X', '-c', 'SELECT 1'], { ...env, PGUSER: 'iam_user', PGSSLMODE: 'require' });
  await runPg('psql', ['-X', '-c', 'SELECT 1'], { ...env, PGUSER: 'pw_user', PGSSLMODE: 'disable' });
  await runPg('psql', ['-X', '-c', 'SELECT 1'], { ...env, PGUSER: 'iam_user', PGDATABASE: 'nope', PGSSLMODE: 'disable' });
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  await client.connect();
  const slow = client.query('SELECT pg_sleep(5)').catch((e: Error) => e);
  for (;;) {
    const n = await db.admin("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' AND state = 'active'");
    if (n.trim() === '1') break;
  }
  await db.admin("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)'");
  t.match(await slow, /canceling statement/);
  await client.end();
  for (const bytes of [
    cancelRequest(42, Buffer.from([1, 2, 3, 4])),
    Buffer.from('GET / HTTP/1.1\r\n\r\n'),
    Buffer.concat([sslRequest(), gssencRequest()]),
    startupBytes({ user: 'iam_user' }).subarray(0, 7),
  ]) {
    const c = await WireClient.connect(proxy.port);
    c.write(bytes);
    await c.rest().catch(() => undefined);
  }
  const reset = connect({ host: '127.0.0.1', port: proxy.port });
  await once(reset, 'connect');
  reset.write(startupBytes({ user: 'iam_user', database: 'orders' }));
  reset.resetAndDestroy();
  await drained(proxy);
  // Sockets finish closing a tick after their 'close' handlers: wait for the counts to settle.
  for (let i = 0; i < 1000 && JSON.stringify(handles()) !== JSON.stringify(before.handles); i++) await new Promise((r) => setImmediate(r));
  t.same(handles(), before.handles, `handles back to the baseline: ${JSON.stringify(handles())}`);
  for (let i = 0; i < 1000 && fds() > before.fds; i++) await new Promise((r) => setImmediate(r));
  t.equal(fds(), before.fds, 'file descriptors back to the baseline');
});

t.test('the database restarts under open sessions: clients hear it, the proxy serves again after', async (t) => {
  const proxy = await startProxy(db);
  t.teardown(() => proxy.close());
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  await client.connect();
  const lost = new Promise<Error>((resolve) => client.on('error', resolve)); // the first; then the close
  await db.stop();
  const err = await lost;
  t.match(
    err,
    { code: '57P01', message: /terminating connection due to administrator command/ },
    "the server's own words reach the client",
  );
  const refused = await runPg('psql', ['-X', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(proxy.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.match(refused.stderr, /could not connect to the server at 127\.0\.0\.1:\d+: ECONNREFUSED/);
  await db.start();
  const back = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(proxy.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(back.stdout.trim(), '1', back.stderr);
  t.same(
    proxy.logs().filter((l) => Number(l.level) >= 50),
    [],
    'nothing logged at error',
  );
});

t.test('a flood of half-open connections: bounded memory, each closed at the startup timeout', async (t) => {
  const proxy = await startProxy(db, { startupTimeoutMs: 1_000 });
  t.teardown(() => proxy.close());
  const N = 400;
  const rssBefore = process.memoryUsage().rss;
  const sockets = await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const s = connect({ host: '127.0.0.1', port: proxy.port });
      s.on('error', () => undefined);
      s.on('data', () => undefined);
      await once(s, 'connect');
      if (i % 2) s.write(startupBytes({ user: 'iam_user' }).subarray(0, 10)); // half a startup
      return s;
    }),
  );
  for (;;) {
    if (proxy.proxy.instances[0]!.connections === N) break;
    await new Promise((r) => setImmediate(r));
  }
  const perConnection = (process.memoryUsage().rss - rssBefore) / N;
  t.ok(
    perConnection < 64 * 1024,
    `about ${Math.round(perConnection / 1024)} KiB per half-open connection (client and proxy ends in one process)`,
  );
  await Promise.all(sockets.map((s) => once(s, 'close')));
  await drained(proxy);
  t.equal(
    proxy.logs().filter((l) => l.reason === 'the client did not complete its startup within 1 s').length,
    N,
    'every one closed by the startup timeout',
  );
  t.equal(proxy.signed(), 0, 'no token for any of them');
  const ok = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(proxy.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(ok.stdout.trim(), '1', 'still serving');
});

t.test('an upstream that answers S and then stalls in the TLS handshake is abandoned at the connect timeout', async (t) => {
  const silent = createServer((s) => s.once('data', () => s.write('S'))); // then never a ServerHello
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.teardown(() => silent.close());
  const proxy = await startProxy(db, { connectTo: `127.0.0.1:${(silent.address() as { port: number }).port}`, connectTimeoutMs: 300 });
  t.teardown(() => proxy.close());
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  const err = await client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, { code: '08001', message: /timed out after 0\.3 s in TLS handshake to the server at 127\.0\.0\.1:\d+/ });
  // (A token may be signed ahead, in parallel with the connect; it is sent only after verification.)
});

t.test('an upstream whose TCP connect never completes is abandoned at the connect timeout', async (t) => {
  // A listener that never accepts, its backlog full: the kernel drops further SYNs, so connect() hangs.
  const py = spawn('python3', [
    '-c',
    "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(0); print(s.getsockname()[1], flush=True); time.sleep(120)",
  ]);
  t.teardown(() => void py.kill());
  const [line] = await once(py.stdout!, 'data');
  const port = Number(String(line).trim());
  const filler = connect({ host: '127.0.0.1', port });
  filler.on('error', () => undefined);
  await once(filler, 'connect');
  t.teardown(() => void filler.destroy());
  const proxy = await startProxy(db, { connectTo: `127.0.0.1:${port}`, connectTimeoutMs: 300 });
  t.teardown(() => proxy.close());
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  const err = await client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, { code: '08001', message: /timed out after 0\.3 s/ });
  t.notMatch(String(err?.message), /TLS/, 'in the TCP connect, before any TLS');
});
