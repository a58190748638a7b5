// The client side : TLS for apps that demand it (auto, a given certificate, off), PostgreSQL
// 17 direct TLS, no plaintext smuggled across the upgrade, a local SCRAM password, allow-lists, and no
// listener beyond loopback without a password unless the user says so.
import t from 'tap';
import pg from 'pg';
import { once } from 'node:events';
import { writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import { connect, createServer, Socket } from 'node:net';
import { fileClientTls, selfSignedPem } from '../src/proxy/client-tls.js';
import { readClientStartup, type ClientLink } from '../src/proxy/client-startup.js';
import { Inbox } from '../src/net/inbox.js';
import { resolveInstance } from '../src/config.js';
import { startTestDb } from './support/testdb.js';
import { runPg, startProxy } from './support/proxy.js';
import { errorOf, WireClient } from './support/wire.js';
import { Bytes, sslRequest, startupBytes } from './support/bytes.js';
import { createRequire } from 'node:module';
import { cleanAwsEnv, runCli } from './support/cli.js';

/** pg's own SCRAM client (untyped), to speak the exchange message by message. */
interface ScramSession {
  response: string;
}
const sasl = createRequire(import.meta.url)('pg/lib/crypto/sasl.js') as {
  startSession(mechanisms: string[]): ScramSession;
  continueSession(session: ScramSession, password: string, serverData: string): Promise<void>;
  finalizeSession(session: ScramSession, serverData: string): void;
};

const db = await startTestDb();
t.teardown(() => db.destroy());

const pem = await selfSignedPem(['localhost']);
const certFile = join(db.dir, 'client-cert.pem');
const keyFile = join(db.dir, 'client-key.pem');
writeFileSync(certFile, pem.cert);
writeFileSync(keyFile, pem.key, { mode: 0o600 });
const passwordFile = join(db.dir, 'client-password');
writeFileSync(passwordFile, 'correct horse battery staple\n', { mode: 0o600 });

const auto = await startProxy(db);
const given = await startProxy(db, { clientTlsCert: certFile, clientTlsKey: keyFile });
const off = await startProxy(db, { clientTls: 'off' });
t.teardown(() => Promise.all([auto.close(), given.close(), off.close()]));

/** psql through the proxy with an sslmode; its \conninfo says whether the client link is TLS. */
async function psql(port: number, sslmode: string, extra: Record<string, string> = {}) {
  const r = await runPg('psql', ['-X', '-At', '-c', '\\conninfo', '-c', 'SELECT current_user'], {
    PGHOST: 'localhost',
    PGPORT: String(port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
    PGSSLMODE: sslmode,
    ...extra,
  });
  return {
    ok: r.code === 0 && r.stdout.includes('iam_user'),
    tls: /SSL connection \(protocol: TLSv1\.[23]/.test(r.stdout),
    stderr: r.stderr,
  };
}

t.test('sslmode against --client-tls auto, a given certificate, and off', async (t) => {
  const rows: Array<[string, number, string, Record<string, string>, { ok: boolean; tls?: boolean; error?: RegExp }]> = [
    ['auto', auto.port, 'disable', {}, { ok: true, tls: false }],
    ['auto', auto.port, 'prefer', {}, { ok: true, tls: true }],
    ['auto', auto.port, 'require', {}, { ok: true, tls: true }],
    ['auto', auto.port, 'verify-full', { PGSSLROOTCERT: certFile }, { ok: false, error: /certificate verify failed/ }],
    ['given', given.port, 'require', {}, { ok: true, tls: true }],
    ['given', given.port, 'verify-full', { PGSSLROOTCERT: certFile }, { ok: true, tls: true }],
    ['off', off.port, 'disable', {}, { ok: true, tls: false }],
    ['off', off.port, 'prefer', {}, { ok: true, tls: false }],
    ['off', off.port, 'require', {}, { ok: false, error: /server does not support SSL/ }],
  ];
  for (const [name, port, sslmode, extra, want] of rows) {
    const got = await psql(port, sslmode, extra);
    t.equal(got.ok, want.ok, `${name} / ${sslmode}: ${got.stderr}`);
    if (want.tls !== undefined) t.equal(got.tls, want.tls, `${name} / ${sslmode}: TLS ${want.tls ? 'on' : 'off'}`);
    if (want.error) t.match(got.stderr, want.error, `${name} / ${sslmode}: fails clearly`);
  }
  const client = new pg.Client({
    host: 'localhost',
    port: given.port,
    user: 'iam_user',
    database: 'orders',
    ssl: { ca: pem.cert, servername: 'localhost' },
  });
  await client.connect();
  t.same((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }], 'node pg with verify-full');
  await client.end();
});

t.test('direct TLS (PostgreSQL 17 sslnegotiation=direct): ALPN postgresql required', async (t) => {
  const direct = tlsConnect({
    host: '127.0.0.1',
    port: auto.port,
    ALPNProtocols: ['postgresql'],
    rejectUnauthorized: false,
    servername: 'localhost',
  });
  await once(direct, 'secureConnect');
  t.equal(direct.alpnProtocol, 'postgresql');
  const c = WireClient.over(direct);
  c.write(startupBytes({ user: 'iam_user', database: 'orders' }));
  t.equal((await c.untilReady()).at(-1)!.code, 'Z', 'logged in over direct TLS');
  c.close();

  const noAlpn = tlsConnect({ host: '127.0.0.1', port: auto.port, rejectUnauthorized: false, servername: 'localhost' });
  await once(noAlpn, 'secureConnect');
  const bare = WireClient.over(noAlpn);
  t.match(errorOf(await bare.message()), { code: '08P01', message: /direct TLS connections must negotiate ALPN "postgresql"/ });

  const offDirect = tlsConnect({ host: '127.0.0.1', port: off.port, ALPNProtocols: ['postgresql'], rejectUnauthorized: false });
  const [err] = await once(offDirect, 'error');
  t.ok(err, 'with --client-tls off a direct TLS attempt is closed');
});

t.test('bytes glued behind an SSLRequest are refused before the handshake (CVE-2021-23214)', async (t) => {
  const signedBefore = auto.signed();
  const logins = (await db.checkerLog()).length;
  const c = await WireClient.connect(auto.port);
  c.write(Buffer.concat([sslRequest(), startupBytes({ user: 'iam_user', database: 'orders' })]));
  const reply = await c.rest();
  t.not(reply[0], 0x53, "no 'S': the handshake never starts");
  t.match(errorOf({ code: 'E', bytes: reply }), { code: '08P01', message: 'received unencrypted data after SSL request' });
  t.equal(auto.signed(), signedBefore, 'no token made');
  t.equal((await db.checkerLog()).length, logins, 'no upstream login');
});

t.test('a local password: SCRAM-SHA-256 right, wrong and missing', async (t) => {
  const locked = await startProxy(db, { clientPasswordFile: passwordFile });
  t.teardown(() => locked.close());
  const right = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(locked.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
    PGPASSWORD: 'correct horse battery staple',
    PGSSLMODE: 'require',
  });
  t.equal(right.stdout.trim(), 'iam_user', right.stderr);
  const client = new pg.Client({
    host: '127.0.0.1',
    port: locked.port,
    user: 'iam_user',
    database: 'orders',
    password: 'correct horse battery staple',
  });
  await client.connect();
  await client.end();

  const signed = locked.signed();
  const wrong = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(locked.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
    PGPASSWORD: 'Tr0ub4dor&3',
  });
  t.match(wrong.stderr, /FATAL: {2}password authentication failed for user "iam_user"/);
  const viaPg = new pg.Client({ host: '127.0.0.1', port: locked.port, user: 'iam_user', database: 'orders', password: 'nope' });
  t.match(
    await viaPg.connect().then(
      () => undefined,
      (e: pg.DatabaseError) => e,
    ),
    { code: '28P01' },
  );
  const missing = await runPg('psql', ['-X', '-At', '-w', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(locked.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.match(missing.stderr, /no password supplied/);
  t.equal(locked.signed(), signed, 'nothing signed for a client without the password');
  t.notMatch(locked.rawLogs(), /correct horse|Tr0ub4dor/, 'passwords never logged');

  // Speaking nonsense during the exchange is a protocol violation, not a crash.
  const c = await WireClient.connect(locked.port);
  c.write(startupBytes({ user: 'iam_user' }));
  t.equal((await c.message())?.code, 'R', 'AuthenticationSASL');
  c.write(Buffer.from('Q\0\0\0\x0dSELECT 1\0'));
  t.match(errorOf(await c.message()), { code: '08P01', message: /expected a SASL response/ });
});

t.test('allow-lists: users and databases outside them get 28000 before any AWS or upstream work', async (t) => {
  const narrow = await startProxy(db, { allowUsers: ['iam_user'], allowDatabases: ['orders'] });
  t.teardown(() => narrow.close());
  const ok = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(narrow.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(ok.stdout.trim(), '1', ok.stderr);
  const signed = narrow.signed();
  const user = new pg.Client({ host: '127.0.0.1', port: narrow.port, user: 'MixedCase_User', database: 'orders' });
  t.match(
    await user.connect().then(
      () => undefined,
      (e: pg.DatabaseError) => e,
    ),
    { code: '28000', message: 'pg-iam-proxy does not sign for user "MixedCase_User" on this listener' },
  );
  const database = new pg.Client({ host: '127.0.0.1', port: narrow.port, user: 'iam_user', database: 'postgres' });
  t.match(
    await database.connect().then(
      () => undefined,
      (e: pg.DatabaseError) => e,
    ),
    { code: '28000', message: /does not connect to database "postgres"/ },
  );
  t.equal(narrow.signed(), signed, 'no token signed for them');
});

t.test('a listener beyond loopback needs a client password, or the explicit risky flag', async (t) => {
  const E = `${db.endpoint}:${db.port}`;
  t.throws(
    () => resolveInstance({ endpoint: E, listen: '0.0.0.0:5432' }),
    /--listen 0\.0\.0\.0:5432 is not a loopback address: anyone who can reach it would log in .* --allow-unauthenticated-network-clients/,
  );
  t.ok(resolveInstance({ endpoint: E, listen: '0.0.0.0:5432', clientPasswordFile: passwordFile }).instance);
  t.ok(resolveInstance({ endpoint: E, listen: '0.0.0.0:5432', allowUnauthenticatedNetworkClients: true }).instance);
  for (const host of ['127.0.0.1:5432', '127.1.2.3:5432', 'localhost:5432', '[::1]:5432'])
    t.ok(resolveInstance({ endpoint: E, listen: host }).instance, `${host} is loopback`);
  t.throws(() => resolveInstance({ endpoint: E, clientTls: 'maybe' }), /--client-tls: "maybe"/);
  t.throws(() => resolveInstance({ endpoint: E, clientTlsCert: certFile }), /go together/);
  t.throws(() => resolveInstance({ endpoint: E, clientTls: 'off', clientTlsCert: certFile, clientTlsKey: keyFile }), /drop one/);
  t.throws(() => resolveInstance({ endpoint: E, allowUsers: [''] }), /--allow-user: ""/);
  const r = await runCli([E, '--listen', '0.0.0.0:0'], cleanAwsEnv(db.dir));
  t.match(r, { code: 2, stderr: /not a loopback address/ });
  const exposed = join(db.dir, 'loose-password');
  writeFileSync(exposed, 'pw\n');
  chmodSync(exposed, 0o644);
  const loose = await startProxy(db, { clientPasswordFile: exposed });
  t.match(loose.rawLogs(), /can be read by other users \(mode 644\): chmod 600 it/);
  await loose.close();
});

t.test('a TLS handshake the client abandons does not disturb the proxy', async (t) => {
  const raw = connect({ host: '127.0.0.1', port: auto.port });
  await once(raw, 'connect');
  raw.write(sslRequest());
  const [answer] = await once(raw, 'data');
  t.same(answer, Buffer.from('S'));
  raw.end(Buffer.from('not a ClientHello at all, just noise\n'));
  await once(raw, 'close');
  t.equal((await psql(auto.port, 'require')).ok, true, 'the next client is served');
});

t.test('review findings: a FIN mid-handshake ends the session at once; SASLprep as libpq and node-pg do it', async (t) => {
  const quick = await startProxy(db, { startupTimeoutMs: 60_000 });
  t.teardown(() => quick.close());
  const raw = connect({ host: '127.0.0.1', port: quick.port });
  await once(raw, 'connect');
  raw.write(sslRequest());
  await once(raw, 'data');
  raw.end(Buffer.from('1603010200010001fc0303', 'hex')); // half a ClientHello, then FIN
  await once(raw, 'close');
  for (;;) {
    if (quick.logs().some((l) => l.msg === 'session closed' || l.msg === 'session failed')) break;
    await new Promise((r) => setImmediate(r));
  }
  t.notOk(
    quick.logs().some((l) => l.failure === 'startup_timeout'),
    'closed on the FIN, not at the 60 s startup timeout',
  );

  const softHyphen = join(db.dir, 'soft-hyphen-password');
  writeFileSync(softHyphen, 'pa\u00ADss\u00A0word\n', { mode: 0o600 });
  const prepped = await startProxy(db, { clientPasswordFile: softHyphen });
  t.teardown(() => prepped.close());
  const client = new pg.Client({
    host: '127.0.0.1',
    port: prepped.port,
    user: 'iam_user',
    database: 'orders',
    password: 'pa\u00ADss\u00A0word',
  });
  await client.connect();
  t.pass('a password with a soft hyphen and a no-break space logs in (node-pg applies SASLprep too)');
  await client.end();
});

t.test("the upgraded TLS socket keeps Node's own listeners (its close frees OpenSSL's state)", async (t) => {
  // Node registers listeners of its own on a TLSSocket; the upgrade must remove only the proxy's.
  const own = (event: string) => new TLSSocket(new Socket(), { isServer: true }).listeners(event).map((f) => f.name);
  const server = createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise((r) => server.close(r)));
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const raw = connect((server.address() as { port: number }).port, '127.0.0.1');
  const [socket] = await accepted;
  const link: ClientLink = { socket, inbox: new Inbox(socket), encrypted: false };
  const reading = readClientStartup(link, fileClientTls(certFile, keyFile));
  raw.write(sslRequest());
  await once(raw, 'data');
  const secure = tlsConnect({ socket: raw, rejectUnauthorized: false });
  await once(secure, 'secureConnect');
  secure.write(startupBytes({ user: 'u' }));
  t.match(await reading, { kind: 'startup', user: 'u' });
  t.ok(link.encrypted);
  for (const event of ['close', 'end', 'error']) {
    const names = link.socket.listeners(event).map((f) => f.name);
    for (const name of own(event)) t.ok(names.includes(name), `${event}: Node's ${name || 'listener'} is still there`);
  }
  secure.destroy();
  link.socket.destroy();
});

t.test("protocol 3.2 after the proxy's own SCRAM: the server's NegotiateProtocolVersion comes before AuthenticationOk", async (t) => {
  // libpq 18 (max_protocol_version=3.2) accepts NegotiateProtocolVersion anywhere before AuthenticationOk,
  // after SASL messages too (PQconnectPoll, CONNECTION_AWAITING_RESPONSE); a PostgreSQL 15 server
  // answers a 3.2 startup with one, offering 3.0. The proxy must relay it once, before R/0.
  await using proxy = await startProxy(db, { clientPasswordFile: passwordFile, clientTls: 'off' });
  const c = await WireClient.connect(proxy.port);
  c.write(startupBytes({ user: 'iam_user', database: 'orders' }, 196610));
  const auth = async (code: number) => {
    const m = await c.message();
    t.equal(m?.code, 'R');
    t.equal(m!.bytes.readInt32BE(5), code, `AuthenticationRequest ${code}`);
    return m!.bytes.subarray(9).toString();
  };
  await auth(10);
  const session = sasl.startSession(['SCRAM-SHA-256']);
  const initial = Buffer.concat([
    Buffer.from('SCRAM-SHA-256\0'),
    new Bytes().int32(Buffer.byteLength(session.response)).raw(Buffer.from(session.response)).join().subarray(4),
  ]);
  c.write(new Bytes().raw(initial).join('p'));
  await sasl.continueSession(session, 'correct horse battery staple', await auth(11));
  c.write(new Bytes().raw(Buffer.from(session.response)).join('p'));
  sasl.finalizeSession(session, await auth(12));
  const rest = await c.untilReady();
  t.same(
    rest.map((m) => m.code).filter((code) => code !== 'S'),
    ['v', 'R', 'K', 'Z'],
    'v once, then AuthenticationOk, BackendKeyData, ReadyForQuery',
  );
  t.equal(rest[0]!.bytes.readInt32BE(5), 196608, 'the server offers 3.0');
  t.equal(rest.find((m) => m.code === 'K')!.bytes.length, 1 + 4 + 4 + 4, 'a 4-byte cancel key, as 3.0 has');
  c.close();
});
