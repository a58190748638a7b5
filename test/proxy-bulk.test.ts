// Bulk transfer through the splice: every byte arrives, in order, both ways, and a client that stops
// reading stops the server (backpressure end to end, docs/protocol.md E1) rather than filling the proxy.
import t from 'tap';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { startTestDb } from './support/testdb.js';
import { runPg, startProxy } from './support/proxy.js';
import { Bytes, startupBytes } from './support/bytes.js';
import { stalledReader } from './support/wire.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const proxy = await startProxy(db);
t.teardown(() => proxy.close());
const libpq = { PGHOST: '127.0.0.1', PGPORT: String(proxy.port), PGUSER: 'iam_user', PGDATABASE: 'orders' };
const sha = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

t.test('COPY out: 300,000 rows arrive byte for byte as the server sends them', async (t) => {
  const file = join(db.dir, 'bulk_out.tsv');
  const r = await runPg(
    'psql',
    ['-X', '-q', '-c', `\\copy (SELECT i, md5(i::text) FROM generate_series(1, 300000) i) TO '${file}'`],
    libpq,
  );
  t.equal(r.code, 0, r.stderr);
  const expected = await db.admin(
    "SELECT encode(sha256(convert_to(string_agg(i || E'\\t' || md5(i::text) || E'\\n', '' ORDER BY i), 'UTF8')), 'hex') FROM generate_series(1, 300000) i",
  );
  t.equal(sha(await readFile(file)), expected);
});

t.test('COPY in: a 12 MB file lands intact', async (t) => {
  await db.admin('CREATE TABLE bulk_in (i int, t text); GRANT INSERT, SELECT ON bulk_in TO iam_user;', 'orders');
  const rows = Array.from({ length: 300_000 }, (_, k) => `${k + 1}\t${sha(String(k))}`);
  const file = join(db.dir, 'bulk_in.tsv');
  await writeFile(file, `${rows.join('\n')}\n`);
  const r = await runPg('psql', ['-X', '-q', '-c', `\\copy bulk_in FROM '${file}'`], libpq);
  t.equal(r.code, 0, r.stderr);
  const [count, digest] = (
    await db.admin(
      "SELECT count(*), encode(sha256(convert_to(string_agg(i || E'\\t' || t, E'\\n' ORDER BY i), 'UTF8')), 'hex') FROM bulk_in",
      'orders',
    )
  ).split('|');
  t.equal(Number(count), rows.length);
  t.equal(digest, sha(rows.join('\n')));
});

t.test('a client that stops reading stops the server; when it reads again, nothing is lost', async (t) => {
  // About 60 MB of result: more than every socket buffer between the server and the client.
  // The server blocks writing to the proxy only if the proxy stopped reading from it.
  const reader = await stalledReader(t, db, proxy.port, 'slow-reader', 60_000);
  t.pass('the server waits in ClientWrite while the client does not read');
  await reader.finish();
});

t.test('an upload stalled behind a locked table ends cleanly when the server dies', async (t) => {
  // A COPY FROM STDIN whose backend waits for a lock reads nothing: what the client sends fills every
  // buffer up to the proxy, which stops reading the client. Then the backend is terminated.
  await db.admin('CREATE TABLE stall_in (t text); GRANT INSERT ON stall_in TO iam_user;', 'orders');
  // Holds the lock until the teardown terminates it (which makes its psql fail: expected).
  const locker = db
    .admin("SET application_name = 'locker'; BEGIN; LOCK TABLE stall_in; SELECT pg_sleep(120);", 'orders')
    .catch(() => undefined);
  t.teardown(async () => {
    await db.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker'");
    await locker;
  });
  for (;;) {
    if (
      (await db.admin(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'locker' AND l.mode = 'AccessExclusiveLock' AND l.granted",
      )) === '1'
    )
      break;
  }

  const socket = connect({ host: '127.0.0.1', port: proxy.port });
  await once(socket, 'connect');
  let received = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
  socket.on('error', () => undefined);
  socket.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: 'stalled' }));
  while (!received.includes(Buffer.from([0x5a, 0, 0, 0, 5]))) await once(socket, 'data'); // ReadyForQuery
  socket.write(new Bytes().cstring('COPY stall_in FROM STDIN').join('Q'));
  // 64 MB of rows: more than the socket buffers from here to the backend can hold.
  const row = Buffer.from(`${'x'.repeat(1023)}\n`);
  const data = new Bytes().raw(Buffer.concat(Array.from({ length: 1024 }, () => row))).join('d');
  for (let i = 0; i < 64; i++) socket.write(data);
  for (;;) {
    const before = proxy.proxy.instances[0]!.liveBytes().fromClient;
    const waiting = await db.admin("SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'stalled'");
    // The backend waits for the lock, and nothing reached the proxy while we asked: it has stopped reading.
    if (waiting === 'Lock' && proxy.proxy.instances[0]!.liveBytes().fromClient === before && socket.writableLength > 0) break;
  }
  t.pass('the proxy stopped reading the client while the server could not take more');

  await db.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'stalled'");
  // The client hears the FATAL, and the session ends on the proxy although the client still has megabytes
  // unsent and the proxy was not reading it.
  while (proxy.proxy.instances[0]!.connections > 0) await new Promise((resolve) => setImmediate(resolve));
  t.pass('the session is gone from the proxy');
  t.match(received.toString('latin1'), /terminating connection due to administrator command/, "the client heard the server's last words");
  socket.destroy();
});
