// Every moment a peer can go away during the login, and the waits that bound it: a client that leaves
// while the proxy fetches credentials, dials or logs in must not leave a logged-in server behind; a
// credential source slower than --connect-timeout is named as such; a shutdown that meets a client in
// its TLS handshake or after its password exchange signs and dials nothing.
import t from 'tap';
import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { TLSSocket } from 'node:tls';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { startTestDb } from './support/testdb.js';
import { runPg, startProxy, type TestProxy } from './support/proxy.js';
import { Bytes, sslRequest, startupBytes } from './support/bytes.js';
import { WireClient } from './support/wire.js';
import { CredentialsHolder } from '../src/aws/credentials.js';
import { SharedTokens, type IamToken, type TokenScope, type TokenSource } from '../src/aws/tokens.js';

const db = await startTestDb();
t.teardown(() => db.destroy());

/** A token source that signs for real but only when the test opens the gate; tells when it is asked. */
function gatedTokens(label = 'profile gated') {
  const real = new SharedTokens(new CredentialsHolder(async () => db.key), { label });
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let asked!: () => void;
  const requested = new Promise<void>((r) => (asked = r));
  const source: TokenSource = {
    label,
    async get(scope: TokenScope, notThis?: IamToken) {
      asked();
      await gate;
      return real.get(scope, notThis);
    },
  };
  return { source, open, requested };
}

const backends = (app: string) => db.admin(`SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}'`);
const lines = (proxy: TestProxy, msg: string, app: string) =>
  proxy.logs().filter((l) => l.msg === msg && (l.startup as { application_name?: string } | undefined)?.application_name === app);

/** Until `count` sessions of this application have logged their last line. */
async function closedSessions(proxy: TestProxy, app: string, count: number): Promise<void> {
  let seen = 0;
  await proxy.line(
    (l) =>
      (l.msg === 'session closed' || l.msg === 'session failed') &&
      (l.startup as { application_name?: string } | undefined)?.application_name === app &&
      ++seen === count,
  );
}

t.test('a client that leaves while credentials are awaited: no password sent, no backend, "client went away"', async (t) => {
  const gated = gatedTokens();
  await using proxy = await startProxy(db, { tokens: gated.source });
  const before = (await db.checkerLog()).length;
  // psql gives up after connect_timeout (2 s, libpq's least) and closes: what an app with a timeout does.
  const psql = runPg('psql', ['-X', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(proxy.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
    PGAPPNAME: 'impatient',
    PGCONNECT_TIMEOUT: '2',
  });
  await gated.requested;
  const r = await psql;
  t.not(r.code, 0, 'psql gave up');
  await closedSessions(proxy, 'impatient', 1);
  gated.open();
  const [closed] = lines(proxy, 'session closed', 'impatient');
  t.match(closed, { reason: /^client went away during login/, phase: 'login', failure: 'client_gone' });
  t.equal(lines(proxy, 'session opened', 'impatient').length, 0, 'never opened');
  t.equal((await db.checkerLog()).length, before, 'no token reached the database');
  t.equal(await backends('impatient'), '0');
  t.equal(proxy.proxy.instances[0]!.connections, 0);
});

t.test('100 clients that send a startup and leave at once: every session ends, no backend stays', async (t) => {
  await using proxy = await startProxy(db);
  const clients = await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      const c = await WireClient.connect(proxy.port);
      c.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: 'storm' }));
      // Leaving at different moments of the login: at once, or a few event-loop turns later.
      for (let turn = 0; turn < i % 7; turn++) await new Promise((r) => setImmediate(r));
      if (i % 2) c.socket.end();
      else c.close();
      return c;
    }),
  );
  await Promise.all(clients.map((c) => c.closed));
  await closedSessions(proxy, 'storm', 100);
  const opened = lines(proxy, 'session opened', 'storm').length;
  t.equal(lines(proxy, 'session closed', 'storm').length, 100, `every session logged its end (${opened} had logged in)`);
  // A server that had logged in is closed the moment its client is seen gone; its backend exits soon after.
  while ((await backends('storm')) !== '0') await new Promise((r) => setTimeout(r, 20));
  t.equal(proxy.proxy.instances[0]!.connections, 0, 'no connection held');
  t.ok(
    lines(proxy, 'session closed', 'storm').some((l) =>
      /client went away during login|client closed the connection/.test(String(l.reason)),
    ),
  );
});

t.test('a client that half-closes behind a pipelined query still gets its answer', async (t) => {
  await using proxy = await startProxy(db);
  const c = await WireClient.connect(proxy.port);
  const query = new Bytes().cstring('SELECT 40 + 2').join('Q');
  c.write(Buffer.concat([startupBytes({ user: 'iam_user', database: 'orders', application_name: 'half' }), query]));
  c.socket.end();
  const replies: string[] = [];
  for (let m = await c.message(); m; m = await c.message()) replies.push(m.code);
  t.ok(replies.includes('D'), `the query's row came back (${replies.join('')})`);
  t.equal(replies.at(-1), 'Z');
});

t.test('a client gone between AuthenticationOk and ReadyForQuery: the server is closed at once', async (t) => {
  const cert = await readFile(join(db.dir, 'server.crt'));
  const key = await readFile(join(db.dir, 'server.key'));
  let clientGone!: () => void;
  const gone = new Promise<void>((r) => (clientGone = r));
  let serverClosed!: Promise<unknown>;
  const server = createServer((raw: Socket) => {
    raw.on('error', () => undefined);
    raw.once('data', () => {
      raw.write('S');
      const s = new TLSSocket(raw, { isServer: true, cert, key });
      s.on('error', () => undefined);
      serverClosed = once(s, 'close');
      s.once('data', () => {
        s.write(new Bytes().int32(3).join('R'));
        s.once('data', async () => {
          s.write(new Bytes().int32(0).join('R'));
          await gone;
          s.write(Buffer.concat([new Bytes().int32(7).int32(8).join('K'), new Bytes().raw([0x49]).join('Z')]));
        });
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise((r) => server.close(r)));
  await using proxy = await startProxy(db, { connectTo: `127.0.0.1:${(server.address() as { port: number }).port}` });
  const c = await WireClient.connect(proxy.port);
  c.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: 'mid-login' }));
  while (proxy.issued.length === 0) await new Promise((r) => setImmediate(r));
  c.socket.end();
  await c.closed;
  clientGone();
  await serverClosed;
  await closedSessions(proxy, 'mid-login', 1);
  t.equal(lines(proxy, 'session opened', 'mid-login').length, 0, 'no session opened for nobody');
  t.match(lines(proxy, 'session closed', 'mid-login')[0], { reason: /client went away during login/ });
});

t.test('credentials slower than --connect-timeout: the client hears that, naming the identity', async (t) => {
  const gated = gatedTokens('profile slow-helper');
  await using proxy = await startProxy(db, { tokens: gated.source, connectTimeoutMs: 300 });
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  const err = await client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  gated.open();
  t.match(err, {
    severity: 'FATAL',
    code: '08001',
    message: 'pg-iam-proxy got no AWS credentials for profile slow-helper within 0.3 s',
    hint: /credential_process/,
  });
  t.ok(proxy.logs().some((l) => l.msg === 'session failed' && l.failure === 'credentials_timeout'));
});

t.test('a shutdown during the client TLS handshake: the socket is closed, no plaintext inside it', async (t) => {
  const proxy = await startProxy(db);
  const c = await WireClient.connect(proxy.port);
  c.write(sslRequest());
  t.same(await c.bytes(1), Buffer.from('S'));
  // Half a ClientHello: the handshake is under way when the shutdown comes.
  c.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
  await proxy.close(0);
  t.equal((await c.rest()).length, 0, 'nothing after the S: no FATAL written into the TLS stream');
});

t.test('a client that finishes its password exchange after the shutdown began: nothing signed, nothing dialled', async (t) => {
  const passwordFile = join(db.dir, 'late-password');
  await writeFile(passwordFile, 'late-secret\n', { mode: 0o600 });
  const proxy = await startProxy(db, { clientPasswordFile: passwordFile, clientTls: 'off' });
  // A relay holds the client's last SCRAM message (c=biws...,p=proof) until the shutdown has begun.
  let held: (() => void) | undefined;
  let holding!: () => void;
  const isHolding = new Promise<void>((r) => (holding = r));
  const relay = createServer((inbound) => {
    const outbound = connect(proxy.port, '127.0.0.1');
    inbound.on('data', (d: Buffer) => {
      if (d[0] === 0x70 && d.includes('c=biws')) {
        held = () => outbound.write(d);
        holding();
      } else outbound.write(d);
    });
    outbound.pipe(inbound);
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
    inbound.on('close', () => outbound.destroy());
  });
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  t.teardown(() => new Promise((r) => relay.close(r)));
  const before = (await db.checkerLog()).length;
  const client = new pg.Client({
    host: '127.0.0.1',
    port: (relay.address() as { port: number }).port,
    user: 'iam_user',
    database: 'orders',
    password: 'late-secret',
  });
  const connecting = client.connect().then(
    () => undefined,
    (e: Error) => e,
  );
  await isHolding;
  const closing = proxy.close(0);
  // The grace (0 s) is over and the session terminated; only then does the client's proof arrive.
  await proxy.line((l) => /still open after waiting/.test(String(l.msg)));
  held!();
  const err = await connecting;
  await closing;
  t.ok(err, 'the client does not log in');
  t.equal(proxy.issued.length, 0, 'no token signed');
  t.equal((await db.checkerLog()).length, before, 'nothing reached the database');
});
