// The main path, end to end: real clients, the proxy, a real PostgreSQL that demands IAM tokens.
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo } from 'node:net';
import { startTestDb } from './support/testdb.js';
import { runPg, startProxy } from './support/proxy.js';
import { Bytes, startupBytes } from './support/bytes.js';
import { errorOf, WireClient } from './support/wire.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const proxy = await startProxy(db);
t.teardown(() => proxy.close());
const libpq = (user: string, extra: Record<string, string> = {}) => ({
  PGHOST: '127.0.0.1',
  PGPORT: String(proxy.port),
  PGUSER: user,
  PGDATABASE: 'orders',
  ...extra,
});

t.test('psql logs in as an IAM user over verified TLS, with no password', async (t) => {
  const r = await runPg(
    'psql',
    ['-X', '-At', '-c', 'SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'],
    libpq('iam_user'),
  );
  t.equal(r.stderr, '');
  t.equal(r.stdout.trim(), 'iam_user|t', 'the server saw a TLS session from the proxy');
  const entry = (await db.checkerLog()).at(-1)!;
  t.match(entry, { user: 'iam_user', accessKeyId: db.key.accessKeyId, host: `${db.endpoint}:${db.port}`, region: 'us-east-1', ok: true });
});

t.test('the TLS handshake with PostgreSQL takes one flight: P-256 offered first, no HelloRetryRequest', async (t) => {
  // A relay between the proxy and the database records what the proxy sends.
  const sent: Buffer[] = [];
  const relay = createServer((inbound) => {
    const outbound = connect(db.port, '127.0.0.1');
    inbound.on('data', (d: Buffer) => sent.push(d));
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
  });
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  t.teardown(() => relay.close());
  const relayed = await startProxy(db, { connectTo: `127.0.0.1:${(relay.address() as AddressInfo).port}` });
  t.teardown(() => relayed.close());
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], { ...libpq('iam_user'), PGPORT: String(relayed.port) });
  t.equal(r.stdout.trim(), '1', r.stderr);
  // After the 8-byte SSLRequest, TLS records: the ClientHellos are handshake records (22) whose first
  // message is type 1. A second one would answer a HelloRetryRequest: a round trip more per login.
  const bytes = Buffer.concat(sent).subarray(8);
  let clientHellos = 0;
  for (let at = 0; at + 5 < bytes.length; at += 5 + bytes.readUInt16BE(at + 3)) {
    if (bytes[at] === 22 && bytes[at + 5] === 1) clientHellos++;
  }
  t.equal(clientHellos, 1, 'one ClientHello');
});

t.test('a mixed-case user is signed with its exact case', async (t) => {
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], libpq('MixedCase_User'));
  t.equal(r.stdout.trim(), 'MixedCase_User', r.stderr);
});

t.test('node pg: queries, and application_name reaches pg_stat_activity', async (t) => {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'iam_user',
    database: 'orders',
    application_name: 'orders-api',
  });
  await client.connect();
  const { rows } = await client.query('SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()');
  t.equal(rows[0].application_name, 'orders-api');
  const items = await client.query('SELECT count(*)::int AS n FROM items');
  t.ok(items.rows[0].n > 0, 'reads the table');
  const big = await client.query("SELECT repeat('x', 5000000) AS s");
  t.equal(big.rows[0].s.length, 5_000_000, 'a large result crosses the splice intact');
  await client.end();
});

t.test('pgbench -C: every connection a fresh login, one shared token', async (t) => {
  const before = proxy.signed();
  const script = join(db.dir, 'one.sql');
  await writeFile(script, 'SELECT 1;\n');
  const r = await runPg('pgbench', ['-n', '-C', '-c', '4', '-j', '2', '-t', '15', '-f', script], libpq('iam_user'));
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /number of transactions actually processed: 60\/60/);
  t.ok(proxy.signed() - before <= 1, `tokens signed for 60 connections: ${proxy.signed() - before}`);
});

t.test('--db-user replaces the user, keeping every other parameter', async (t) => {
  await using forced = await startProxy(db, { dbUser: 'iam_user' });
  const client = new pg.Client({ host: '127.0.0.1', port: forced.port, user: 'whoever', database: 'orders', application_name: 'kept' });
  await client.connect();
  const { rows } = await client.query(
    'SELECT current_user AS u, current_database() AS d, application_name AS a FROM pg_stat_activity WHERE pid = pg_backend_pid()',
  );
  t.same(rows[0], { u: 'iam_user', d: 'orders', a: 'kept' });
  await client.end();
});

t.test('protocol 3.2 startup: NegotiateProtocolVersion is relayed, then the session works', async (t) => {
  const c = await WireClient.connect(proxy.port);
  c.write(startupBytes({ user: 'iam_user', database: 'orders' }, 196610));
  const messages = await c.untilReady();
  t.equal(messages[0]!.code, 'v', 'PostgreSQL 15 answers 3.2 with NegotiateProtocolVersion');
  t.equal(messages[0]!.bytes.readInt32BE(5), 196608, 'downgraded to 3.0');
  t.same(
    messages.map((m) => m.code).filter((c) => c === 'R' || c === 'K' || c === 'Z'),
    ['R', 'K', 'Z'],
  );
  c.write(new Bytes().cstring('SELECT 42').join('Q'));
  const reply = await c.untilReady();
  t.ok(
    reply.some((m) => m.code === 'D' && m.bytes.includes(Buffer.from('42'))),
    'query answered',
  );
  c.write(new Bytes().join('X'));
  await c.closed;
});

t.test('bytes pipelined behind the startup are held and sent after login (B11)', async (t) => {
  const c = await WireClient.connect(proxy.port);
  c.write(Buffer.concat([startupBytes({ user: 'iam_user', database: 'orders' }), new Bytes().cstring('SELECT 7').join('Q')]));
  await c.untilReady(); // login
  const reply = await c.untilReady(); // the pipelined query
  t.ok(reply.some((m) => m.code === 'D' && m.bytes.includes(Buffer.from('7'))));
  c.close();
});

t.test('a startup sent one byte at a time works the same', async (t) => {
  const c = await WireClient.connect(proxy.port);
  await c.trickle(startupBytes({ user: 'iam_user', database: 'orders' }));
  const messages = await c.untilReady();
  t.equal(messages.at(-1)!.code, 'Z');
  c.close();
});

t.test('a transiently rejected token is retried with a fresh one, invisibly', async (t) => {
  const before = proxy.issued.length;
  await db.rejectNext(1);
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], libpq('iam_user'));
  t.equal(r.stdout.trim(), '1', r.stderr);
  const log = await db.checkerLog();
  t.match(log.slice(-2), [{ ok: false, reason: 'forced' }, { ok: true }]);
  t.equal(proxy.issued.length - before, 1, 'the retry used a newly signed token');
});

t.test('a user the server lets in without a password: passed through, no token sent', async (t) => {
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], libpq('trust_user', { PGAPPNAME: 'no-password' }));
  t.equal(r.stdout.trim(), 'trust_user', r.stderr);
  t.equal(r.stderr, '');
  const checks = await db.checkerLog();
  t.notOk(
    checks.some((c) => c.user === 'trust_user'),
    'no token reached the database for a login that asked for none',
  );
  const opened = proxy
    .logs()
    .find(
      (l) =>
        (l.startup as { application_name?: string } | undefined)?.application_name === 'no-password' &&
        String(l.msg).startsWith('session opened'),
    );
  t.match(opened, { msg: /the server asked for no password, so no token was sent/, auth: 'none' });
  t.notOk(opened && 'accessKeyId' in opened, 'no signing key named');
});

t.test('a rejected token: one retry, then each client within a minute costs one IAM check', async (t) => {
  // A key the database does not know: every token is refused, as when rds-db:connect is missing.
  const stranger = { accessKeyId: 'AKIASTRANGER00000001', secretAccessKey: 'not-trusted-by-the-database-000000000000' };
  await using refused = await startProxy(db, { key: stranger });
  const before = (await db.checkerLog()).length;
  const errors: pg.DatabaseError[] = [];
  for (let i = 0; i < 6; i++) {
    const client = new pg.Client({ host: '127.0.0.1', port: refused.port, user: 'iam_user', database: 'orders' });
    errors.push(
      (await client.connect().then(
        () => undefined,
        (e: pg.DatabaseError) => e,
      ))!,
    );
  }
  const checks = (await db.checkerLog()).slice(before);
  t.equal(checks.length, 7, 'the first client 2 checks (a retry), the other five 1 each: not 18');
  t.ok(checks.every((c) => !c.ok));
  t.equal(refused.issued.length, 2, 'two tokens signed: the first and the retry’s');
  t.match(errors[0], { code: '28000', detail: /The server rejected a token signed for this login, then a token signed for this login\.$/ });
  t.match(errors[5], {
    code: '28000',
    detail:
      /The server rejected a cached token signed \d+ s earlier\. It was not tried again: the server refused tokens for this endpoint and user 6 times in the last 60 s, the last 0 s ago\./,
  });
  t.match(errors[5]!.detail, /signed with access key AKIA…0001 for /, 'the key shortened for whoever reaches the listener');
  t.notMatch(errors[5]!.detail, /STRANGER/);
});

t.test('a persistent rejection keeps the server text and explains', async (t) => {
  await db.rejectNext(2);
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  const err = await client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  await db.rejectNext(0);
  t.ok(err, 'login fails');
  t.equal(err!.severity, 'FATAL');
  t.equal(err!.code, '28000');
  t.match(err!.message, /PAM authentication failed for user "iam_user"/);
  const key = db.key.accessKeyId;
  t.match(
    err!.detail,
    new RegExp(
      `access key ${key.slice(0, 4)}…${key.slice(-4)} for ${db.endpoint.replaceAll('.', '\\.')}:${db.port}, region us-east-1, user "iam_user"\\. The server rejected a cached token signed \\d+ s earlier, then a token signed for this login\\.$`,
    ),
  );
  t.match(err!.hint, /GRANT rds_iam TO "iam_user".*rds-db:connect.*arn:aws:rds-db:us-east-1:<account-id>:dbuser:.*\/iam_user.*clock.*case/);
  const failed = proxy.logs().find((l) => l.msg === 'session failed' && l.failure === 'iam_rejected');
  t.ok(failed, 'logged as a failed session');
});

t.test('the server closing a session at startup (database does not exist) reaches the client', async (t) => {
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'nope' });
  const err = await client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.equal(err?.code, '3D000');
  t.match(err?.message, /database "nope" does not exist/);
});

t.test('the server terminating a session: the client hears why, the close reason is logged', async (t) => {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'iam_user',
    database: 'orders',
    application_name: 'to-be-terminated',
  });
  const errored = new Promise<Error>((resolve) => client.on('error', resolve));
  await client.connect();
  await db.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'to-be-terminated'");
  t.match(await errored, { code: '57P01', message: /terminating connection due to administrator command/ });
  await client.end().catch(() => undefined);
  const line = await proxy.line(
    (l) => l.msg === 'session closed' && (l.startup as { application_name?: string })?.application_name === 'to-be-terminated',
  );
  t.match(line, { reason: 'server closed the connection' });
});

t.test('a client that resets mid-session: the server side is closed too', async (t) => {
  const c = await WireClient.connect(proxy.port);
  c.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: 'resetter' }));
  await c.untilReady();
  c.socket.resetAndDestroy();
  while ((await db.admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'resetter'")) !== '0') {
    await new Promise((r) => setTimeout(r, 20));
  }
  const line = proxy
    .logs()
    .find((l) => (l.startup as { application_name?: string })?.application_name === 'resetter' && l.msg === 'session closed');
  t.match(line, { reason: /error on the client connection: read ECONNRESET|client closed the connection/ });
});

t.test('one log line per session open and close, and never a token', async (t) => {
  const logs = proxy.logs();
  const opened = logs.filter((l) => l.msg === 'session opened');
  const closed = logs.filter((l) => l.msg === 'session closed');
  t.ok(opened.length >= 5);
  t.match(opened[0], {
    startup: { user: 'iam_user', database: 'orders' },
    endpoint: `${db.endpoint}:${db.port}`,
    accessKeyId: db.key.accessKeyId,
  });
  t.match(
    closed.find((l) => (l.bytes as { toClient: number }).toClient > 5_000_000),
    { reason: 'client closed the connection', phase: 'ready' },
  );
  const raw = proxy.rawLogs();
  t.ok(proxy.issued.length > 0);
  for (const token of proxy.issued) {
    t.notOk(raw.includes(token.value), 'token not in logs');
    t.notOk(raw.includes(token.value.split('X-Amz-Signature=')[1]!), 'signature not in logs');
  }
  t.notOk(/X-Amz-Signature=[0-9a-f]/.test(raw));
  t.notOk(raw.includes(db.key.secretAccessKey), 'secret key not in logs');
  const checker = JSON.stringify(await db.checkerLog());
  for (const token of proxy.issued) t.notOk(checker.includes(token.value));
});

t.test('errors are well-formed ErrorResponses: an unknown protocol gets 0A000', async (t) => {
  const c = await WireClient.connect(proxy.port);
  c.write(startupBytes({ user: 'iam_user' }, 0x00020000));
  const err = errorOf(await c.message());
  t.match(err, { severity: 'FATAL', code: '0A000' });
  await c.closed;
});
