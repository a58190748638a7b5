// The shared token cache stays bounded whatever user names clients send, and drops what is no longer
// worth reusing first; the rejection memory (one IAM check per client after a refusal) is bounded too.
import t from 'tap';
import { CredentialsHolder } from '../src/aws/credentials.js';
import { SharedTokens, type TokenScope } from '../src/aws/tokens.js';
import { RecentRejections } from '../src/upstream/rejections.js';

const key = { accessKeyId: 'AKIAEXAMPLE000000001', secretAccessKey: 'secret-never-shown' };
const scope = (user: string): TokenScope => ({ host: 'db.abc.us-east-1.rds.amazonaws.com', port: 5432, region: 'us-east-1', user });

function cache(maxEntries: number) {
  let now = 1_000_000;
  let signed = 0;
  const tokens = new SharedTokens(new CredentialsHolder(async () => key, { now: () => now }), {
    maxEntries,
    now: () => now,
    sign: async (s) => `token-for-${s.user}-${++signed}`,
  });
  const size = () => (tokens as unknown as { cache: Map<string, unknown> }).cache.size;
  return { tokens, size, signed: () => signed, advance: (ms: number) => (now += ms) };
}

t.test('50,000 user names: the cache holds at most its bound', async (t) => {
  const c = cache(100);
  for (let i = 0; i < 50_000; i++) await c.tokens.get(scope(`user${i}`));
  t.equal(c.size(), 100);
  t.equal(c.signed(), 50_000);
  // The newest are the ones kept: a user just served reuses its token.
  await c.tokens.get(scope('user49999'));
  t.equal(c.signed(), 50_000, 'the most recent entry survived');
});

t.test('over the bound, tokens past their reuse age go before younger ones', async (t) => {
  const c = cache(3);
  await c.tokens.get(scope('old'));
  c.advance(11 * 60_000); // past the 10-minute reuse age
  await c.tokens.get(scope('young1'));
  await c.tokens.get(scope('young2'));
  await c.tokens.get(scope('young3')); // over the bound: 'old' is the one to go
  t.equal(c.size(), 3);
  const before = c.signed();
  await c.tokens.get(scope('young1'));
  await c.tokens.get(scope('young2'));
  await c.tokens.get(scope('young3'));
  t.equal(c.signed(), before, 'the young ones were all kept');
});

t.test('the rejection memory forgets after its window and stays bounded', async (t) => {
  let now = 0;
  const memory = new RecentRejections(60_000, 2, () => now);
  t.match(memory.note('a'), { count: 1, lastAt: 0 });
  now = 30_000;
  t.match(memory.note('a'), { count: 2, lastAt: 30_000 });
  now = 91_000;
  t.equal(memory.recent('a'), undefined, 'a minute after the last refusal, forgotten');
  memory.note('x');
  memory.note('y');
  memory.note('z');
  t.equal(memory.recent('x'), undefined, 'the oldest went when a third came');
  t.ok(memory.recent('y') && memory.recent('z'));
  memory.clear('y');
  t.equal(memory.recent('y'), undefined, 'a success clears it');
});
