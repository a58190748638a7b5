// a wrong client password (--client-password-file) costs the guesser time. Consecutive
// failures from one address hold back that address's next verdicts (250 ms doubling to 4 s); an
// address with no failure on record is answered at once, and a right password clears the record.
// The delays asserted are the ones the proxy chose (its log line, or FailedPasswords with a fake
// clock), never wall time.
import t from 'tap';
import pg from 'pg';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { addressKey, FailedPasswords } from '../src/proxy/scram.js';
import { startTestDb } from './support/testdb.js';
import { startProxy, type TestProxy } from './support/proxy.js';
import { Bytes, startupBytes } from './support/bytes.js';
import { errorOf, WireClient } from './support/wire.js';

t.test('FailedPasswords: the schedule, the reset, the queue, expiry and the bound (a fake clock)', async (t) => {
  let now = 0;
  const failures = new FailedPasswords({ now: () => now, maxAddresses: 3 });
  const wrong = (address: string | undefined) => failures.verdict(address, false).holdMs;

  // Each attempt made once the previous verdict was told.
  const holds: number[] = [];
  for (let i = 0; i < 8; i++) {
    const held = wrong('192.0.2.1');
    holds.push(held);
    now += held + 1;
  }
  t.same(holds, [0, 250, 500, 1000, 2000, 4000, 4000, 4000], 'the first failure is answered at once; then 250 ms doubling to a 4 s cap');
  t.equal(failures.verdict('192.0.2.1', true).holdMs, 4000, 'a right password waits as long as a wrong one would: silence is no verdict');
  now += 4000;
  t.equal(wrong('192.0.2.1'), 0, 'and, once its verdict is told, clears the record: the next failure is answered at once');
  t.equal(failures.verdict('198.51.100.7', true).holdMs, 0, 'another address is not held');

  // A right password clears nothing before its own verdict is told: guesses queued behind it are held as
  // if it were wrong, so no earlier answer marks it.
  now += 10_000;
  const mixed = [
    wrong('192.0.2.8'),
    wrong('192.0.2.8'),
    failures.verdict('192.0.2.8', true).holdMs,
    wrong('192.0.2.8'),
    wrong('192.0.2.8'),
  ];
  t.same(mixed, [0, 250, 750, 1750, 3750], 'the right third attempt and those behind it are held as if it were wrong');
  now += 750;
  t.equal(wrong('192.0.2.8'), 3000 + 500, 'once it is told, what is still queued behind it counts from it: its failures are cleared');

  // Many attempts at the same instant are told one delay apart, not all together.
  now += 10_000;
  const burst = [wrong('192.0.2.1'), wrong('192.0.2.1'), wrong('192.0.2.1'), wrong('192.0.2.1')];
  t.same(burst, [250, 750, 1750, 3750], 'parallel connections do not multiply the rate');

  now += 10 * 60_000;
  t.equal(wrong('192.0.2.1'), 0, 'forgotten 10 minutes after its last failure');
  t.equal(wrong('192.0.2.1'), 250);

  // Bounded: beyond maxAddresses, new addresses share one record and cannot push out the others.
  for (const address of ['192.0.2.2', '192.0.2.3', '192.0.2.4', '192.0.2.5', '192.0.2.6']) wrong(address);
  t.ok(failures.size <= 4, `at most maxAddresses records and the shared one (${failures.size})`);
  now += 1000;
  t.equal(wrong('192.0.2.1'), 500, "the flood did not reset 192.0.2.1's record");
  t.ok(wrong('192.0.2.7') > 0, 'a new address in a full table shares the record of the others that overflowed');
});

t.test('addressKey: IPv4 as is, IPv6 by its /64, unix-socket clients together', async (t) => {
  const rows: Array<[string | undefined, string]> = [
    [undefined, 'local'],
    ['203.0.113.9', '203.0.113.9'],
    ['::ffff:203.0.113.9', '203.0.113.9'],
    ['2001:db8:1:2:a:b:c:d', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::9', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002:ffff::1', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['64:ff9b::192.0.2.1', '64:ff9b:0:0::/64'],
  ];
  for (const [address, key] of rows) t.equal(addressKey(address), key, String(address));
});

const db = await startTestDb();
t.teardown(() => db.destroy());
const PASSWORD = 'correct horse battery staple';
const passwordFile = join(db.dir, 'delay-client-password');
writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });

/** node pg from a chosen loopback address, so the proxy sees different clients. */
function fromAddress(localAddress: string) {
  return () => {
    const socket = new Socket();
    const connect = socket.connect.bind(socket);
    socket.connect = ((port: number, host: string) => connect({ port, host, localAddress })) as typeof socket.connect;
    return socket;
  };
}

/** Log in with node pg and run a query: 'ok', or the SQLSTATE it was refused with. */
async function attempt(port: number, password: string, localAddress = '127.0.0.1'): Promise<string> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port,
    user: 'iam_user',
    database: 'orders',
    password,
    stream: fromAddress(localAddress),
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ u: string }>('SELECT current_user AS u');
    await client.end();
    return rows[0]!.u === 'iam_user' ? 'ok' : 'logged in as someone else';
  } catch (err) {
    return (err as pg.DatabaseError).code ?? (err as Error).message;
  }
}

const HELD = 'client password: verdict held back after wrong passwords from this address';
/** The holds the proxy chose, in order: the client address (without port) and the delay. */
function holds(proxy: TestProxy): Array<{ from: string; failuresBefore: number; heldMs: number }> {
  return proxy
    .logs()
    .filter((l) => l.msg === HELD)
    .map((l) => ({ from: String(l.client).replace(/:\d+$/, ''), ...(l.clientPassword as { failuresBefore: number; heldMs: number }) }));
}

/** Resolve once `done()` holds; the log sink is written synchronously, so each turn of the loop may change it. */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((r) => setImmediate(r));
}

t.test('wrong passwords from one address are answered later and later; a right one clears the record', async (t) => {
  const proxy = await startProxy(db, { clientPasswordFile: passwordFile });
  t.teardown(() => proxy.close());
  t.equal(await attempt(proxy.port, 'guess 1'), '28P01');
  t.same(holds(proxy), [], 'the first wrong password is answered at once');
  t.equal(await attempt(proxy.port, 'guess 2'), '28P01');
  t.equal(await attempt(proxy.port, 'guess 3'), '28P01');
  t.equal(await attempt(proxy.port, PASSWORD), 'ok', 'the right password still logs in');
  t.same(
    holds(proxy),
    [
      { from: '127.0.0.1', failuresBefore: 1, heldMs: 250 },
      { from: '127.0.0.1', failuresBefore: 2, heldMs: 500 },
      { from: '127.0.0.1', failuresBefore: 3, heldMs: 1000 },
    ],
    'each verdict after a failure waits longer, the right one too (else silence would tell a guesser it failed)',
  );
  t.equal(await attempt(proxy.port, 'guess 4'), '28P01');
  t.equal(holds(proxy).length, 3, 'after the right password, a wrong one is answered at once again');
  t.equal(proxy.logs().filter((l) => l.failure === 'client_password').length, 4, 'every wrong password is a failed session');
  t.notMatch(proxy.rawLogs(), /correct horse|guess \d/, 'no password reaches the log');
});

t.test('while one address is held, other addresses and honest clients are answered at once', async (t) => {
  const proxy = await startProxy(db, { clientPasswordFile: passwordFile });
  t.teardown(() => proxy.close());
  t.equal(await attempt(proxy.port, PASSWORD, '127.0.0.2'), 'ok', 'an honest client, first (its token is now cached)');
  for (let i = 0; i < 3; i++) t.equal(await attempt(proxy.port, `guess ${i}`), '28P01');

  const settled: string[] = [];
  const guesser = attempt(proxy.port, 'guess 4').then((r) => (settled.push('guesser'), r));
  await until(() => holds(proxy).length === 3);
  t.same(holds(proxy).at(-1), { from: '127.0.0.1', failuresBefore: 3, heldMs: 1000 }, "the guesser's fourth verdict is being held");
  const [honest, stranger] = await Promise.all([
    attempt(proxy.port, PASSWORD, '127.0.0.2').then((r) => (settled.push('honest'), r)),
    attempt(proxy.port, 'typo', '127.0.0.3').then((r) => (settled.push('stranger'), r)),
  ]);
  t.equal(honest, 'ok');
  t.equal(stranger, '28P01');
  t.equal(await guesser, '28P01');
  t.equal(settled.at(-1), 'guesser', 'the honest login and the other address were answered while the guesser waited');
  t.same(new Set(holds(proxy).map((h) => h.from)), new Set(['127.0.0.1']), 'only the guessing address was ever held');
});

const sasl = createRequire(import.meta.url)('pg/lib/crypto/sasl.js') as {
  startSession(mechanisms: string[]): { response: string };
  continueSession(session: { response: string }, password: string, serverData: string): Promise<void>;
};

/** One SCRAM exchange over PostgreSQL 17's direct TLS (psql here is older): the verdict's code, 'R' or 'E'. */
async function directTlsAttempt(port: number, password: string): Promise<string | undefined> {
  const socket = tlsConnect({ host: '127.0.0.1', port, ALPNProtocols: ['postgresql'], rejectUnauthorized: false, servername: 'localhost' });
  await once(socket, 'secureConnect');
  const c = WireClient.over(socket);
  c.write(startupBytes({ user: 'iam_user', database: 'orders' }));
  await c.message(); // AuthenticationSASL
  const session = sasl.startSession(['SCRAM-SHA-256']);
  const first = Buffer.from(session.response);
  c.write(new Bytes().cstring('SCRAM-SHA-256').int32(first.length).raw(first).join('p'));
  const serverFirst = await c.message(); // AuthenticationSASLContinue: 'R', length, code 11, data
  await sasl.continueSession(session, password, serverFirst!.bytes.subarray(9).toString());
  c.write(new Bytes().raw(Buffer.from(session.response)).join('p'));
  const verdict = await c.message();
  c.close();
  return verdict?.code === 'E' ? errorOf(verdict)?.code : verdict?.code;
}

t.test('a direct-TLS client counts under its TCP address, like the same host speaking plain', async (t) => {
  const proxy = await startProxy(db, { clientPasswordFile: passwordFile });
  t.teardown(() => proxy.close());
  t.equal(await directTlsAttempt(proxy.port, 'guess 1'), '28P01');
  t.equal(await attempt(proxy.port, 'guess 2'), '28P01');
  t.equal(await directTlsAttempt(proxy.port, 'guess 3'), '28P01');
  t.same(
    holds(proxy).map((h) => [h.from, h.failuresBefore]),
    [
      ['127.0.0.1', 1],
      ['127.0.0.1', 2],
    ],
    'one record for 127.0.0.1 whatever the transport (a TLS socket over a prefixed stream has no address of its own)',
  );
});

t.test('a verdict held past the startup timeout is never told; a client that leaves is let go at once', async (t) => {
  const proxy = await startProxy(db, { clientPasswordFile: passwordFile, startupTimeoutMs: 900 });
  t.teardown(() => proxy.close());
  for (let i = 0; i < 3; i++)
    t.equal(await attempt(proxy.port, `guess ${i}`), '28P01', `guess ${i} is answered within the 0.9 s startup timeout`);
  t.equal(await attempt(proxy.port, 'guess 3'), '08P01', 'the fourth, held 1 s, ends at the startup timeout instead: no verdict');
  t.same(holds(proxy).at(-1), { from: '127.0.0.1', failuresBefore: 3, heldMs: 1000 });
  t.ok(
    proxy.logs().some((l) => l.failure === 'startup_timeout' && /did not complete its startup within 0\.9 s/.test(String(l.reason))),
    'the session ended at the startup timeout',
  );

  let socket: Socket | undefined;
  const leaver = new pg.Client({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'iam_user',
    database: 'orders',
    password: 'guess 4',
    stream: () => (socket = fromAddress('127.0.0.1')()),
  });
  leaver.on('error', () => undefined);
  const left = leaver.connect().then(
    () => 'connected',
    () => 'refused',
  );
  await until(() => holds(proxy).length === 4);
  const held = proxy
    .logs()
    .filter((l) => l.msg === HELD)
    .at(-1)!;
  // 2 s after the 4th failure, and queued behind the 4th verdict (never told: it is not over yet).
  t.match(held.clientPassword, { failuresBefore: 4 });
  const heldMs = (held.clientPassword as { heldMs: number }).heldMs;
  t.ok(heldMs >= 2000, `held ${heldMs} ms`);
  socket!.destroy();
  t.equal(await left, 'refused');
  const closedLine = () => proxy.logs().find((l) => l.conn === held.conn && typeof l.durationMs === 'number');
  await until(() => closedLine() !== undefined);
  t.match(closedLine(), { reason: /client went away during startup/ }, 'the session ended with the client');
  t.ok(Number(closedLine()!.durationMs) < heldMs, 'before the hold was over: nothing is held for a client that left');
});

/**
 * One guess as a guesser who does not wait: the SCRAM exchange over plain TCP, then at most `patienceMs`
 * for the verdict before hanging up. Whether a verdict came in time.
 */
async function impatientGuess(port: number, password: string, patienceMs: number): Promise<boolean> {
  const c = await WireClient.connect(port);
  try {
    c.write(startupBytes({ user: 'iam_user', database: 'orders' }));
    await c.message(); // AuthenticationSASL
    const session = sasl.startSession(['SCRAM-SHA-256']);
    const first = Buffer.from(session.response);
    c.write(new Bytes().cstring('SCRAM-SHA-256').int32(first.length).raw(first).join('p'));
    const serverFirst = await c.message();
    await sasl.continueSession(session, password, serverFirst!.bytes.subarray(9).toString());
    c.write(new Bytes().raw(Buffer.from(session.response)).join('p'));
    let timer: NodeJS.Timeout | undefined;
    const verdict = await Promise.race([c.message(), new Promise<'gave up'>((r) => (timer = setTimeout(() => r('gave up'), patienceMs)))]);
    clearTimeout(timer);
    return verdict !== 'gave up' && verdict !== undefined;
  } finally {
    c.close();
  }
}

t.test('a guesser who hangs up each guess early learns nothing: no answer marks the right password', async (t) => {
  const proxy = await startProxy(db, { clientPasswordFile: passwordFile });
  t.teardown(() => proxy.close());
  const guesses = Array.from({ length: 41 }, (_, i) => (i === 19 ? PASSWORD : `guess ${i}`));
  const answered: number[] = [];
  const ended = () => proxy.logs().filter((l) => typeof l.durationMs === 'number').length;
  for (const [i, guess] of guesses.entries()) {
    if (await impatientGuess(proxy.port, guess, 60)) answered.push(i);
    // The session is over (the proxy's own account) before the next guess.
    await until(() => ended() === i + 1);
  }
  t.ok(
    answered.length <= 1 && (answered[0] ?? 0) === 0,
    `only the first guess (no failure on record) may be answered at once: ${answered.join(',')}`,
  );
  const held = holds(proxy);
  t.same(
    held.map((h) => h.failuresBefore),
    Array.from({ length: 40 }, (_, i) => i + 1),
    'every guess after the first was held, those behind the right password as if it were wrong',
  );
  const last = held.at(-1)!.heldMs;
  t.ok(last >= 60_000, `the 41st verdict would be told only minutes later (${Math.round(last / 1000)} s): the delays are queued`);
  t.ok(
    held.every((h, i) => i === 0 || h.heldMs > held[i - 1]!.heldMs),
    'each verdict is queued behind the one before: the order of answers tells nothing either',
  );
  t.notMatch(proxy.rawLogs(), /correct horse|guess \d/, 'no password reaches the log');
});
