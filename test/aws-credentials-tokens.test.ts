// The credentials holder and the shared token cache, on a fake clock.
import t from 'tap';
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import { CredentialsHolder } from '../src/aws/credentials.js';
import { SharedTokens, signWithSdk, type TokenScope } from '../src/aws/tokens.js';
import { fakeTime } from './support/fake-time.js';
import { memoryLog } from './support/memory-log.js';

const MIN = 60_000;
const scope: TokenScope = { host: 'mydb.abc123xyz.us-east-1.rds.amazonaws.com', port: 5432, region: 'us-east-1', user: 'iam_user' };

function source(now: () => number, lifetimeMs: number | undefined) {
  let n = 0;
  let failing = false;
  const provider = async () => {
    if (failing) throw new Error('endpoint down');
    n++;
    return {
      accessKeyId: `AKIA${n}`,
      secretAccessKey: 'secret',
      ...(lifetimeMs === undefined ? {} : { expiration: new Date(now() + lifetimeMs) }),
    } satisfies AwsCredentialIdentity;
  };
  return { provider, fetches: () => n, fail: (f: boolean) => (failing = f) };
}

t.test('single flight: a burst of callers shares one fetch', async (t) => {
  let now = 0;
  const s = source(() => now, 60 * MIN);
  const holder = new CredentialsHolder(s.provider, { now: () => now });
  const all = await Promise.all(Array.from({ length: 200 }, () => holder.get()));
  t.equal(s.fetches(), 1);
  t.ok(all.every((c) => c.accessKeyId === 'AKIA1'));
  now = 49 * MIN;
  t.equal((await holder.get()).accessKeyId, 'AKIA1', 'reused while far from expiry');
  t.equal(s.fetches(), 1);
});

t.test('refreshed in the background before expiry; callers never wait', async (t) => {
  let now = 0;
  const s = source(() => now, 60 * MIN);
  const holder = new CredentialsHolder(s.provider, { now: () => now });
  await holder.get();
  now = 51 * MIN; // 9 minutes left: inside the 10-minute refresh window
  t.equal((await holder.get()).accessKeyId, 'AKIA1', 'the current ones are returned at once');
  await new Promise((r) => setImmediate(r));
  t.equal(s.fetches(), 2, 'a refresh ran behind the caller');
  t.equal((await holder.get()).accessKeyId, 'AKIA2');
});

t.test('a failed refresh keeps the valid credentials, backs off, never uses expired ones', async (t) => {
  let now = 0;
  const s = source(() => now, 60 * MIN);
  const holder = new CredentialsHolder(s.provider, { now: () => now, retryMs: 1000 });
  await holder.get();
  s.fail(true);
  now = 55 * MIN;
  t.equal((await holder.get()).accessKeyId, 'AKIA1');
  await new Promise((r) => setImmediate(r));
  now += 500; // inside the backoff: no new attempt
  t.equal((await holder.get()).accessKeyId, 'AKIA1');
  now = 59.5 * MIN; // under a minute left: unusable, a fetch is awaited and fails
  await t.rejects(holder.get(), /endpoint down/);
  t.equal(holder.peek(), undefined);
  s.fail(false);
  await t.rejects(holder.get(), /endpoint down/, 'within the backoff the last failure is repeated, no fetch');
  t.equal(s.fetches(), 1);
  now += 60_000;
  t.equal((await holder.get()).accessKeyId, 'AKIA2', 'recovers when the source returns');
});

t.test('static credentials (no expiry) are fetched once', async (t) => {
  const s = source(() => 0, undefined);
  const holder = new CredentialsHolder(s.provider);
  await holder.get();
  await holder.get();
  t.equal(s.fetches(), 1);
});

/** Gaps between successive times. */
const gaps = (times: readonly number[]) => times.slice(1).map((at, i) => at - times[i]!);

t.test('credentials fetched with under a minute left are a failure: backoff, a clear error, a warning', async (t) => {
  // `aws configure export-credentials --format env` near the end of its session: every fetch hands back
  // the same keys, AWS_CREDENTIAL_EXPIRATION 30 s ahead. They once were fetched 1,461 times in 2 s.
  const time = fakeTime(t);
  const start = Date.now();
  const expiration = new Date(start + 30_000);
  const fetchedAt: number[] = [];
  const { log, lines, raw } = memoryLog('info');
  let answer: AwsCredentialIdentity = {
    accessKeyId: 'ASIAEXPORTED',
    secretAccessKey: 'exported-secret',
    sessionToken: 'exported-session',
    expiration,
  };
  const holder = new CredentialsHolder(async () => (fetchedAt.push(Date.now()), answer), {
    log,
    source: () => 'environment variables (AWS_ACCESS_KEY_ID)',
  });
  t.teardown(() => holder.close());
  const expiring = `the AWS credentials from environment variables (AWS_ACCESS_KEY_ID) expire at ${expiration.toISOString()}, in less than 60 s, and fetching again gives none newer: renew them where they come from`;
  await t.rejects(holder.get(), { name: 'CredentialsExpiringError', code: 'CREDENTIALS_EXPIRING', message: expiring });
  await t.rejects(holder.get(), { message: expiring }, 'a caller within the backoff hears the same, without a fetch');
  t.equal(fetchedAt.length, 1);
  t.equal(holder.peek(), undefined, 'not ready: nothing to sign with');

  await time.advance(2_000);
  t.equal(fetchedAt.length, 2, 'two fetches in 2 s: the first, and the retry after 1 s');
  await time.advance(10 * 60_000 - 2_000);
  t.same(
    gaps(fetchedAt),
    [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000, 60_000, 60_000, 60_000, 60_000],
    'the failure backoff: 1 s doubling, capped at 60 s',
  );
  await t.rejects(holder.get(), {
    message: `the AWS credentials from environment variables (AWS_ACCESS_KEY_ID) expired at ${expiration.toISOString()}, and fetching again gives none newer: renew them where they come from`,
  });

  const warnings = lines().filter((l) => l.level === 40);
  t.equal(warnings.length, fetchedAt.length, 'one warning per fetch');
  t.match(warnings[0], {
    msg: 'AWS credentials from the source are too close to expiry and it gives none newer: the proxy cannot renew them',
    err: { type: 'CredentialsExpiringError', message: expiring },
    fetchedExpiration: expiration.toISOString(),
    retryInMs: 1_000,
    keepUsing: false,
  });
  t.notMatch(raw(), /exported-secret|exported-session/);

  // Whoever renews them (a new export, the helper's next session) is heard at the next attempt.
  answer = { accessKeyId: 'ASIARENEWED', secretAccessKey: 's', expiration: new Date(Date.now() + 3_600_000) };
  await time.advance(60_000);
  t.equal(holder.peek()?.accessKeyId, 'ASIARENEWED', 'renewed by the timer, no client needed');
  t.match(lines().at(-1), { level: 30, msg: 'AWS credentials available again' });
});

t.test('short-lived credentials handed back unchanged: refreshed at most once a second near their end', async (t) => {
  // Five minutes left, the same keys on every fetch: halving the usable time left would fetch in an
  // ever tighter series; the base retry delay is the floor, then the expiry failure's backoff takes over.
  const time = fakeTime(t);
  const expiration = new Date(Date.now() + 5 * 60_000);
  const fetchedAt: number[] = [];
  const holder = new CredentialsHolder(
    async () => (fetchedAt.push(Date.now()), { accessKeyId: 'ASIASAME', secretAccessKey: 's', expiration }),
  );
  t.teardown(() => holder.close());
  const start = Date.now();
  await holder.get();
  await time.advance(4 * 60_000 + 10_000, 25);
  const offsets = fetchedAt.map((at) => at - start);
  t.same(offsets.slice(0, 6), [0, 120_000, 180_000, 210_000, 225_000, 232_500], 'halfway through the usable time, while that is long');
  t.ok(
    gaps(fetchedAt).every((gap) => gap >= 1_000),
    `never sooner than 1 s apart: ${offsets.join(', ')}`,
  );
  t.ok(fetchedAt.length <= 15, `${fetchedAt.length} fetches over 250 s`);
  await t.rejects(holder.get(), { name: 'CredentialsExpiringError' });
});

t.test('invalidate: static keys the server refused are read again; anything else is kept', async (t) => {
  let n = 0;
  const { log, lines } = memoryLog('info');
  const holder = new CredentialsHolder(async () => ({ accessKeyId: `AKIASTATIC${++n}`, secretAccessKey: 's' }), { log });
  t.equal((await holder.get()).accessKeyId, 'AKIASTATIC1');
  holder.invalidate('AKIASOMEOTHERKEY');
  t.equal((await holder.get()).accessKeyId, 'AKIASTATIC1', 'another key: nothing dropped');
  t.equal(n, 1);
  holder.invalidate('AKIASTATIC1');
  t.equal(holder.peek(), undefined, 'dropped');
  const [a, b] = await Promise.all([holder.get(), holder.get()]);
  t.equal(a.accessKeyId, 'AKIASTATIC2', 'the next get() fetches again');
  t.equal(b, a, 'one fetch for the callers waiting on it');
  t.equal(n, 2);
  holder.invalidate('AKIASTATIC1');
  t.equal((await holder.get()).accessKeyId, 'AKIASTATIC2', 'a late report about the old key drops nothing');
  t.match(lines(), [{ level: 30, accessKeyId: 'AKIASTATIC1', msg: /dropped after the server refused a token/ }]);

  let m = 0;
  const expiring = new CredentialsHolder(
    async () => (++m, { accessKeyId: 'ASIATEMP', secretAccessKey: 's', expiration: new Date(Date.now() + 3_600_000) }),
  );
  t.teardown(() => expiring.close());
  await expiring.get();
  expiring.invalidate('ASIATEMP');
  t.equal((await expiring.get()).accessKeyId, 'ASIATEMP');
  t.equal(m, 1, 'credentials with an expiry are renewed on their schedule, not dropped');
  new CredentialsHolder(async () => ({ accessKeyId: 'X', secretAccessKey: 's' })).invalidate('X'); // nothing in hand: nothing to do
});

t.test('tokens: shared per scope, reissued after 10 minutes or before the credentials expire', async (t) => {
  let now = 0;
  let signed = 0;
  const s = source(() => now, 20 * MIN);
  const holder = new CredentialsHolder(s.provider, { now: () => now, refreshAheadMs: 0 });
  const tokens = new SharedTokens(holder, {
    now: () => now,
    sign: async (sc, c) => `${sc.host}:${sc.port}/?DBUser=${sc.user}&X-Amz-Signature=${c.accessKeyId}-${++signed}`,
  });
  const burst = await Promise.all(Array.from({ length: 100 }, () => tokens.get(scope)));
  t.equal(new Set(burst.map((b) => b.value)).size, 1, 'one token for a burst');
  t.equal(burst[0]!.expiresAt, 15 * MIN);
  t.not((await tokens.get({ ...scope, user: 'other' })).value, burst[0]!.value, 'another user, another token');
  now = 9 * MIN;
  t.equal((await tokens.get(scope)).value, burst[0]!.value);
  now = 10 * MIN;
  const next = await tokens.get(scope);
  t.not(next.value, burst[0]!.value, 'reissued at 10 minutes');
  t.equal(next.expiresAt, 20 * MIN, 'a token cannot outlive its credentials');
  now = 19.5 * MIN;
  const near = await tokens.get(scope);
  t.not(near.value, next.value, 'not handed out with under a minute left');
  const rejected = await tokens.get(scope, near);
  t.not(rejected.value, near.value, 'a rejected token is replaced');
  const [a, b] = await Promise.all([tokens.get(scope, rejected), tokens.get(scope, rejected)]);
  t.equal(a.value, b.value, 'concurrent replacements share one new token');
});

t.test('a signing failure is not cached', async (t) => {
  let fail = true;
  let now = 0;
  const holder = new CredentialsHolder(
    async () => {
      if (fail) throw new Error('no credentials');
      return { accessKeyId: 'AKIAX', secretAccessKey: 's' };
    },
    { now: () => now },
  );
  const tokens = new SharedTokens(holder);
  await t.rejects(tokens.get(scope), /no credentials/);
  fail = false;
  now += 1_000; // past the first backoff
  t.match(
    (await tokens.get(scope)).value,
    /^mydb\.abc123xyz\.us-east-1\.rds\.amazonaws\.com:5432\/\?Action=connect&DBUser=iam_user&X-Amz-Algorithm=AWS4-HMAC-SHA256/,
  );
});

t.test('the SDK signer makes an RDS token for the exact scope', async (t) => {
  const token = await signWithSdk(scope, { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'x' });
  const url = new URL(`https://${token}`);
  t.equal(url.host, 'mydb.abc123xyz.us-east-1.rds.amazonaws.com:5432');
  t.equal(url.searchParams.get('Action'), 'connect');
  t.equal(url.searchParams.get('DBUser'), 'iam_user');
  t.equal(url.searchParams.get('X-Amz-Expires'), '900');
  t.match(url.searchParams.get('X-Amz-Credential'), /^AKIAEXAMPLE\/\d{8}\/us-east-1\/rds-db\/aws4_request$/);
});
