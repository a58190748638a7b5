// The credentials holder and the shared token cache, on a fake clock.
import t from 'tap';
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import { CredentialsHolder } from '../src/aws/credentials.js';
import { SharedTokens, signWithSdk, type TokenScope } from '../src/aws/tokens.js';

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

t.test('tokens: shared per scope, reissued after 10 minutes or before the credentials expire', async (t) => {
  let now = 0;
  let signed = 0;
  const s = source(() => now, 20 * MIN);
  const holder = new CredentialsHolder(s.provider, { now: () => now, refreshAheadMs: 0 });
  const tokens = new SharedTokens(holder, { now: () => now, sign: async (sc, c) => `${sc.host}:${sc.port}/?DBUser=${sc.user}&X-Amz-Signature=${c.accessKeyId}-${++signed}` });
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
  t.match((await tokens.get(scope)).value, /^mydb\.abc123xyz\.us-east-1\.rds\.amazonaws\.com:5432\/\?Action=connect&DBUser=iam_user&X-Amz-Algorithm=AWS4-HMAC-SHA256/);
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
