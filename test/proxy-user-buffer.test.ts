// The relay's fast path : reads into buffers of its own, on the Node line that runs this file
// (CI runs it on each supported line). It must engage here, and this file fails if it silently stops
// doing so; what it reads must arrive byte for byte when a write holds a buffer; the public path it
// falls back to works as well.
import t from 'tap';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { createSecureContext, createServer as createTlsServer, connect as tlsConnect, TLSSocket } from 'node:tls';
import { join } from 'node:path';
import pg from 'pg';
import { prefixed } from '../src/proxy/client-startup.js';
import { selfSignedPem } from '../src/proxy/client-tls.js';
import { splice } from '../src/proxy/splice.js';
import { detectReadPath, readPath, reads } from '../src/net/user-buffer.js';
import { runPg, startProxy } from './support/proxy.js';
import { stalledReader } from './support/wire.js';
import { startTestDb } from './support/testdb.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const proxy = await startProxy(db);
t.teardown(() => proxy.close());
const libpq = (sslmode: string) => ({
  PGHOST: '127.0.0.1',
  PGPORT: String(proxy.port),
  PGUSER: 'iam_user',
  PGDATABASE: 'orders',
  PGSSLMODE: sslmode,
});
type Tap = Pick<typeof t, 'equal'>;
const sha = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const snapshot = () => ({ ...reads });
// Node's warnings while this file runs: a relay that piles up 'drain' listeners shows here.
const warnings: string[] = [];
process.on('warning', (w) => warnings.push(`${w.name}: ${w.message}`));
await db.admin('CREATE TABLE ub_in (i int, t text); GRANT INSERT, SELECT, TRUNCATE ON ub_in TO iam_user;', 'orders');

/** COPY out and in through psql, checked against the database's own digest; then a few queries by node-postgres. */
async function traffic(t: Tap, sslmode: string): Promise<void> {
  const out = join(db.dir, `ub_out_${sslmode}.tsv`);
  const rows = 100_000;
  const r = await runPg(
    'psql',
    ['-X', '-q', '-c', `\\copy (SELECT i, md5(i::text) FROM generate_series(1, ${rows}) i) TO '${out}'`],
    libpq(sslmode),
  );
  t.equal(r.code, 0, r.stderr);
  const expected = await db.admin(
    `SELECT encode(sha256(convert_to(string_agg(i || E'\\t' || md5(i::text) || E'\\n', '' ORDER BY i), 'UTF8')), 'hex') FROM generate_series(1, ${rows}) i`,
  );
  t.equal(sha(await readFile(out)), expected, `COPY out (${sslmode}): every byte`);

  const lines = Array.from({ length: rows }, (_, k) => `${k + 1}\t${sha(String(k))}`);
  const file = join(db.dir, `ub_in_${sslmode}.tsv`);
  await writeFile(file, `${lines.join('\n')}\n`);
  const w = await runPg('psql', ['-X', '-q', '-c', 'TRUNCATE ub_in', '-c', `\\copy ub_in FROM '${file}'`], libpq(sslmode));
  t.equal(w.code, 0, w.stderr);
  const digest = await db.admin(
    "SELECT encode(sha256(convert_to(string_agg(i || E'\\t' || t, E'\\n' ORDER BY i), 'UTF8')), 'hex') FROM ub_in",
    'orders',
  );
  t.equal(digest, sha(lines.join('\n')), `COPY in (${sslmode}): every byte`);

  const client = new pg.Client({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'iam_user',
    database: 'orders',
    ssl: sslmode === 'disable' ? false : { rejectUnauthorized: false },
  });
  await client.connect();
  for (let i = 0; i < 50; i++) {
    const { rows: got } = await client.query('SELECT $1::int AS n, repeat($2::text, $1::int) AS s', [i, 'ab']);
    t.equal(got[0].s, 'ab'.repeat(i));
  }
  await client.end();
}

t.test(`Node ${process.version} reads into the relay's own buffers`, async (t) => {
  t.same(readPath(), { kind: 'user-buffer' }, 'the onread hooks are found on this Node line');
  const said = await proxy.line((e) => e.reads !== undefined);
  t.equal(said.reads, 'user-buffer', 'the debug log says which path runs');
  t.equal(said.msg, 'the splice reads into buffers of its own');
});

for (const sslmode of ['disable', 'require']) {
  t.test(
    `COPY both ways and queries, client ${sslmode === 'disable' ? 'in plaintext' : 'over TLS'}: every read by the fast path`,
    async (t) => {
      const before = snapshot();
      await traffic(t, sslmode);
      t.ok(reads.userBuffer - before.userBuffer > 100, `reads into own buffers: ${reads.userBuffer - before.userBuffer}`);
      t.equal(reads.stream, before.stream, 'not one read through Node streams');
    },
  );
}

t.test('a client that stops reading: buffers a write holds are not used again, and every byte arrives', async (t) => {
  const before = snapshot();
  const reader = await stalledReader(t, db, proxy.port, 'ub-slow-reader', 30_000);
  // The backend blocks as soon as the proxy is slower than it; the proxy's writes to the client, which
  // reads nothing, wait soon after (each turn asks the database once: no sleep).
  while (reads.held === before.held) await db.admin('SELECT 1');
  t.pass('a write to the stalled client held a buffer: the next read went elsewhere');
  await reader.finish();
});

/**
 * A TLS server and a front door, in process, for splices whose both ends the test holds. `tlsClient`: the
 * client speaks TLS, taken over a Duplex as direct TLS takes it (client-startup.ts). `highWaterMark`: the
 * front door's (by default one the tests' bursts stay under: the relay never pauses for it).
 */
async function splicePair(t: { teardown: (fn: () => void) => void }, options: { tlsClient?: boolean; highWaterMark?: number } = {}) {
  const { cert, key } = await selfSignedPem(['localhost']);
  let serverSide!: (s: TLSSocket) => void;
  const accepted = new Promise<TLSSocket>((resolve) => (serverSide = resolve));
  const server = createTlsServer({ cert, key }, serverSide);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const front = createServer({ highWaterMark: options.highWaterMark ?? 1 << 20, pauseOnConnect: true });
  front.listen(0, '127.0.0.1');
  await once(front, 'listening');
  t.teardown(() => {
    server.close();
    front.close();
  });
  const port = (front.address() as AddressInfo).port;
  const outside: Socket = options.tlsClient
    ? tlsConnect({ port, host: '127.0.0.1', ca: cert, servername: 'localhost' })
    : connect(port, '127.0.0.1');
  const [raw] = (await once(front, 'connection')) as [Socket];
  let inside: Socket = raw;
  if (options.tlsClient) {
    raw.resume();
    const [hello] = (await once(raw, 'data')) as [Buffer];
    raw.pause();
    const secure = new TLSSocket(prefixed(raw, hello), { isServer: true, secureContext: createSecureContext({ cert, key }) });
    await Promise.all([once(secure, 'secure'), once(outside, 'secureConnect')]);
    inside = secure;
  } else raw.resume();
  const upstream = tlsConnect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', ca: cert, servername: 'localhost' });
  await once(upstream, 'secureConnect');
  return { outside, inside, upstream, peer: await accepted };
}

/** A splicePair spliced, with what `side` (the TLS server's end, or the client's) receives gathered. */
async function spliced(t: { teardown: (fn: () => void) => void }, side: 'peer' | 'outside') {
  const p = await splicePair(t);
  const got: Buffer[] = [];
  p[side].on('data', (c: Buffer) => got.push(c));
  return { ...p, got: () => Buffer.concat(got), ended: splice(p.inside, p.upstream, Buffer.alloc(0), Buffer.alloc(0)) };
}

const turns = async (done: () => boolean) => {
  while (!done()) await new Promise<void>((wake) => setImmediate(wake));
};

t.test('a read queued behind a TLS write is copied: the next read into the shared buffer does not reach it', async (t) => {
  // Two splices of plain clients, whose reads share one buffer, each to a TLS server that records what it gets.
  const pair = () => spliced(t, 'peer');
  const a = await pair();
  const b = await pair();
  const before = snapshot();
  a.upstream.cork(); // a's next write is queued, not encrypted at once
  a.outside.write(Buffer.alloc(1000, 'a'));
  await turns(() => reads.copied > before.copied);
  t.equal(reads.copied - before.copied, 1, 'the read behind the corked write was copied');
  b.outside.write(Buffer.alloc(1000, 'b')); // lands where a's read did
  await turns(() => b.got().length === 1000);
  a.upstream.uncork();
  await turns(() => a.got().length === 1000);
  t.same(a.got(), Buffer.alloc(1000, 'a'), "a's server gets a's bytes");
  t.same(b.got(), Buffer.alloc(1000, 'b'), "b's server gets b's bytes");
  for (const p of [a, b]) p.outside.destroy();
  t.same((await a.ended).reason, 'client closed the connection');
  await b.ended;
});

t.test('idle TLS sockets share a read buffer: a write that holds it moves the others, whose reads never reach it', async (t) => {
  // Two splices of TLS servers to plain clients, both idle: their next reads land in one buffer.
  const pair = () => spliced(t, 'outside');
  const a = await pair();
  const b = await pair();
  const before = snapshot();
  a.inside.cork(); // a's write to its client waits, holding the bytes it was given
  a.peer.write(Buffer.alloc(100, 'a'));
  await turns(() => a.inside.writableLength === 100);
  t.ok(reads.repointed > before.repointed, 'the other sockets of the group read into a new buffer');
  const moved = reads.repointed;
  for (const fill of ['x', 'y', 'z']) {
    a.peer.write(Buffer.alloc(100, fill));
    await turns(() => a.inside.writableLength === 100 * ('axyz'.indexOf(fill) + 1));
  }
  t.equal(reads.repointed, moved, 'while its client is slow, a reads into buffers of its own: its group is not moved again');
  b.peer.write(Buffer.alloc(100, 'b'));
  await turns(() => b.got().length === 100);
  t.same(b.got(), Buffer.alloc(100, 'b'), "b's client gets b's bytes");
  a.inside.uncork();
  await turns(() => a.got().length === 400);
  t.same(
    a.got(),
    Buffer.concat(['a', 'x', 'y', 'z'].map((fill) => Buffer.alloc(100, fill))),
    "a's client gets a's bytes, not b's read over them",
  );
  a.peer.write(Buffer.alloc(100, 'c'));
  b.peer.write(Buffer.alloc(100, 'd'));
  await turns(() => a.got().length === 500 && b.got().length === 200);
  t.same(a.got().subarray(400), Buffer.alloc(100, 'c'), 'a, idle again, shares a buffer again: its next read arrives');
  t.same(b.got().subarray(100), Buffer.alloc(100, 'd'));
  for (const p of [a, b]) p.outside.destroy();
  await Promise.all([a.ended, b.ended]);
});

t.test('a socket moved again and again reads into a buffer of its own: what each move leaves stays bounded', async (t) => {
  const pair = () => spliced(t, 'outside');
  const a = await pair();
  const b = await pair(); // idle in a's group: moved each time a's write holds their buffer
  const before = snapshot();
  let sent = 0;
  const through = async (fill: string, corked: boolean) => {
    if (corked) a.inside.cork();
    a.peer.write(Buffer.alloc(10, fill));
    sent += 10;
    if (corked) {
      await turns(() => a.inside.writableLength === 10);
      a.inside.uncork();
    }
    await turns(() => a.got().length === sent);
  };
  let holds = 0;
  while (reads.ownForGood === before.ownForGood && holds < 20) {
    await through('r', false); // its client keeps up: a reads into its group's buffer again
    await through('h', true); // a write that holds it: the others move
    holds++;
  }
  t.equal(reads.ownForGood - before.ownForGood, 1, `b reads into its own buffer after ${holds} moves`);
  const moved = reads.repointed;
  await through('r', false);
  await through('h', true);
  t.equal(reads.repointed, moved, 'and is not moved again');
  b.peer.write(Buffer.alloc(100, 'b'));
  await turns(() => b.got().length === 100);
  t.same(b.got(), Buffer.alloc(100, 'b'), "b's bytes arrive");
  t.equal(
    a.got().toString(),
    'r'
      .repeat(10)
      .concat('h'.repeat(10))
      .repeat(holds + 1),
    "a's bytes arrive, in order",
  );
  for (const p of [a, b]) p.outside.destroy();
  await Promise.all([a.ended, b.ended]);
});

t.test('bytes a TLS client sent before the splice (held by its stream) go to the server before later ones', async (t) => {
  const { outside, inside, upstream, peer } = await splicePair(t, { tlsClient: true });
  const got: Buffer[] = [];
  peer.on('data', (c: Buffer) => got.push(c));
  const early = Buffer.alloc(256 * 1024, 'e'); // more than the TLS socket's stream holds before the splice
  const late = Buffer.alloc(64 * 1024, 'l');
  outside.write(early);
  await turns(() => inside.readableLength >= 16 * 1024);
  const ended = splice(inside, upstream, Buffer.alloc(0), Buffer.alloc(0));
  outside.write(late);
  await turns(() => Buffer.concat(got).length >= early.length + late.length);
  t.ok(Buffer.concat(got).equals(Buffer.concat([early, late])), 'every byte, in the order sent');
  outside.destroy();
  await ended;
});

t.test('a TLS source paused for a full TLS client asks for one drain, however many records it still decrypts', async (t) => {
  const { outside, inside, upstream, peer } = await splicePair(t, { tlsClient: true });
  const ended = splice(inside, upstream, Buffer.alloc(0), Buffer.alloc(0));
  inside.cork(); // the client's writes wait: the relay goes over the mark and pauses the server side
  const sent = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < sent.length; i += 4) sent.writeUInt32BE(i, i);
  // Short records, each its own read and write: many of them are decrypted after the pause.
  for (let i = 0; i < sent.length; i += 1024) peer.write(sent.subarray(i, i + 1024));
  // The records of the read that went over the mark are decrypted in that same turn, each a read.
  await turns(() => upstream.isPaused());
  t.ok(inside.writableLength > 16 * 1024, `over the mark: ${inside.writableLength} bytes wait`);
  t.equal(inside.listenerCount('drain'), 1, 'one drain listener');
  const got: Buffer[] = [];
  outside.on('data', (c: Buffer) => got.push(c));
  inside.uncork();
  await turns(() => Buffer.concat(got).length >= sent.length);
  t.ok(Buffer.concat(got).equals(sent), 'every byte, in order');
  outside.destroy();
  await ended;
});

t.test('a burst to a client whose writes wait: its buffer goes on after what they hold, every byte in order', async (t) => {
  const { outside, inside, upstream, peer } = await splicePair(t);
  const ended = splice(inside, upstream, Buffer.alloc(0), Buffer.alloc(0));
  const before = snapshot();
  const got: Buffer[] = [];
  outside.on('data', (c: Buffer) => got.push(c));
  inside.cork(); // the client's writes wait: every buffer handed to them stays held
  const record = (n: number, fill: number) => Buffer.alloc(n, fill);
  const sent = [record(8192, 1), record(8192, 2), record(8192, 3)];
  for (const r of sent) peer.write(r); // three full records: a burst
  await turns(() => inside.writableLength >= 3 * 8192);
  const more = [record(8192, 4), record(100, 5)]; // one more of the burst, then a short one that ends it
  for (const r of more) peer.write(r);
  await turns(() => inside.writableLength >= 4 * 8192 + 100);
  t.ok(reads.held > before.held, 'the buffers the waiting writes hold were given up');
  inside.uncork();
  const all = Buffer.concat([...sent, ...more]);
  await turns(() => Buffer.concat(got).length >= all.length);
  t.ok(Buffer.concat(got).equals(all), 'every byte, in order');
  outside.destroy();
  await ended;
});

t.test('a client gone before the splice: nothing to read, the splice ends', async (t) => {
  const { outside, inside, upstream } = await splicePair(t);
  outside.destroy();
  inside.destroy();
  const end = await splice(inside, upstream, Buffer.alloc(0), Buffer.alloc(0));
  t.match(end.reason, /closed/);
  t.ok(upstream.destroyed, 'the server side goes with it');
});

t.test('PG_IAM_PROXY_USER_BUFFERS=off: the public path, with the same bytes', async (t) => {
  process.env.PG_IAM_PROXY_USER_BUFFERS = 'off';
  t.teardown(() => {
    delete process.env.PG_IAM_PROXY_USER_BUFFERS;
    detectReadPath();
  });
  t.same(detectReadPath(), { kind: 'stream', why: 'PG_IAM_PROXY_USER_BUFFERS=off' });
  const before = snapshot();
  for (const sslmode of ['disable', 'require']) await traffic(t, sslmode);
  t.ok(reads.stream - before.stream > 100, `reads through Node streams: ${reads.stream - before.stream}`);
  t.equal(reads.userBuffer, before.userBuffer, 'not one read into own buffers');
  const off = await startProxy(db);
  t.teardown(() => off.close());
  const said = await off.line((e) => e.reads !== undefined);
  t.same([said.reads, said.why, said.msg], ['stream', 'PG_IAM_PROXY_USER_BUFFERS=off', 'the splice reads through Node streams']);
});

t.test('no warning from Node while all of the above ran (one drain listener at a time)', async (t) => {
  t.same(warnings, []);
});
