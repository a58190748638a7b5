// What the client hears when the upstream half fails: each a well-formed FATAL with a hint, never a hang,
// and the proxy keeps serving.
import t from 'tap';
import pg from 'pg';
import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { startTestDb } from './support/testdb.js';
import { closedPort, runPg, startProxy } from './support/proxy.js';

const db = await startTestDb();
t.teardown(() => db.destroy());

async function login(port: number, user = 'iam_user') {
  const client = new pg.Client({ host: '127.0.0.1', port, user, database: 'orders' });
  try {
    await client.connect();
    await client.end();
    return undefined;
  } catch (err) {
    return err as pg.DatabaseError;
  }
}

/** A fake "database" that answers the SSLRequest with `reply` and records what it received. */
async function fakeServer(reply: Buffer | null): Promise<{ server: Server; port: number; received: () => Buffer }> {
  let received = Buffer.alloc(0);
  const server = createServer((s: Socket) => {
    s.on('data', (d) => {
      received = Buffer.concat([received, d]);
      if (reply && received.length === 8) s.write(reply);
    });
    s.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise((r) => server.close(r)));
  return { server, port: (server.address() as { port: number }).port, received: () => received };
}

t.test('a user outside rds_iam: told it is not set up for IAM, with the GRANT', async (t) => {
  await using proxy = await startProxy(db);
  const err = await login(proxy.port, 'pw_user');
  t.match(err, {
    severity: 'FATAL',
    code: '28000',
    message: /user "pw_user" is not set up for IAM authentication: the server asked for SCRAM-SHA-256/,
  });
  t.match(err!.hint, /GRANT rds_iam TO "pw_user";/);
  t.equal(await login(proxy.port), undefined, 'the proxy keeps serving others');
});

t.test('an unknown role: same explanation, naming CREATE USER', async (t) => {
  await using proxy = await startProxy(db);
  const err = await login(proxy.port, 'nobody');
  t.match(err, { code: '28000', message: /"nobody" is not set up for IAM/, hint: /CREATE USER "nobody"/ });
});

t.test('an untrusted CA: says so and points at the global bundle', async (t) => {
  await using proxy = await startProxy(db, { caFile: db.otherCaFile });
  const attempts = (await db.checkerLog()).length;
  const err = await login(proxy.port);
  t.match(err, {
    code: '08001',
    message: /certificate is not trusted/,
    hint: new RegExp(`No CA in ${db.otherCaFile.replaceAll('.', '\\.')}.*global-bundle\\.pem`),
  });
  t.equal((await db.checkerLog()).length, attempts, 'no token reached the server');
});

t.test('the bundled RDS CAs (no --ca-file): an unknown issuer names the global bundle', async (t) => {
  await using proxy = await startProxy(db, { caFile: null });
  const err = await login(proxy.port);
  t.match(err, {
    code: '08001',
    message: /certificate is not trusted/,
    hint: /bundled RDS CAs lack regions launched after mid-2022.*--ca-file global-bundle\.pem/,
  });
});

t.test('a certificate for another name: says the endpoint must be the exact RDS name', async (t) => {
  await using proxy = await startProxy(db, { endpoint: `otherdb.abc123xyz.us-east-1.rds.amazonaws.com:${db.port}` });
  const err = await login(proxy.port);
  t.match(err, {
    code: '08001',
    message: /certificate does not match host name "otherdb\.abc123xyz/,
    hint: /exact RDS endpoint name.*--connect-to/,
  });
});

t.test('database down: connection refused, with what to check', async (t) => {
  await using proxy = await startProxy(db, { connectTo: `127.0.0.1:${await closedPort()}` });
  const err = await login(proxy.port);
  t.match(err, { code: '08001', message: /could not connect to the server at 127\.0\.0\.1:\d+: ECONNREFUSED/, hint: /security group/ });
});

t.test("upstream answers 'N': never plaintext", async (t) => {
  const fake = await fakeServer(Buffer.from('N'));
  await using proxy = await startProxy(db, { connectTo: `127.0.0.1:${fake.port}` });
  const err = await login(proxy.port);
  t.match(err, { code: '08001', message: /does not accept TLS connections/, hint: /never falls back to plaintext/ });
  t.equal(fake.received().length, 8, 'only the SSLRequest was sent: no startup, no token');
});

t.test("upstream answers 'S' plus bytes: refused as tampering (CVE-2021-23222)", async (t) => {
  const fake = await fakeServer(Buffer.from('Sjunk'));
  await using proxy = await startProxy(db, { connectTo: `127.0.0.1:${fake.port}` });
  const err = await login(proxy.port);
  t.match(err, { code: '08P01', message: /unencrypted data after accepting TLS/ });
  t.equal(fake.received().length, 8);
});

t.test("upstream answers 'E': not relayed (CVE-2024-10977)", async (t) => {
  const fake = await fakeServer(Buffer.concat([Buffer.from('E'), Buffer.from('\0\0\0\x20SFATAL\0MYou have been pwned\0\0')]));
  await using proxy = await startProxy(db, { connectTo: `127.0.0.1:${fake.port}` });
  const err = await login(proxy.port);
  t.match(err, { code: '08001', message: /answered the TLS request with an error/ });
  t.notMatch(JSON.stringify(err), /pwned/);
});

t.test('upstream answers something else, or hangs up', async (t) => {
  const other = await fakeServer(Buffer.from('H'));
  await using p1 = await startProxy(db, { connectTo: `127.0.0.1:${other.port}` });
  t.match(await login(p1.port), { code: '08P01', message: /with 0x48, not 'S' or 'N'/ });
  const hangup = await fakeServer(null);
  hangup.server.on('connection', (s: Socket) => s.on('data', () => s.destroy()));
  await using p2 = await startProxy(db, { connectTo: `127.0.0.1:${hangup.port}` });
  t.match(await login(p2.port), { code: '08001', message: /closed the connection during TLS negotiation/ });
});

t.test('an upstream that stalls is abandoned at the connect timeout', async (t) => {
  const stall = await fakeServer(null); // accepts, never answers the SSLRequest
  await using proxy = await startProxy(db, { connectTo: `127.0.0.1:${stall.port}`, connectTimeoutMs: 300 });
  const err = await login(proxy.port);
  t.match(err, { code: '08001', message: /timed out after 0\.3 s in TLS negotiation/ });
});

t.test('psql shows the message and the hint', async (t) => {
  await using proxy = await startProxy(db, { caFile: db.otherCaFile });
  const r = await runPg('psql', ['-X', '-c', 'select 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(proxy.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(r.code, 2);
  t.match(r.stderr, /FATAL: {2}the server's certificate is not trusted/);
  t.match(r.stderr, /HINT: {2}No CA in/);
});
