// The differential test of pooling: random protocol sequences from several clients at once through pools of
// one and two servers, in transaction and session mode; every message each client receives must be what its
// sequence gets alone on a direct connection (test/support/differential.ts has the grammar and the rules).
//   PG_IAM_PROXY_DIFF_RUNS=5000 raises the number of runs (the soak: npm run soak -- MINUTES --differential);
//   PG_IAM_PROXY_DIFF_SEED=n [PG_IAM_PROXY_DIFF_PATH=p] replays a failure (the failure prints both).
import t from 'tap';
import { startTestDb } from './support/testdb.js';
import fc from 'fast-check';
import { compare, describeScenario, directRun, harness, scenario, searchAndShrink } from './support/differential.js';

const runs = Number(process.env.PG_IAM_PROXY_DIFF_RUNS ?? 100);
const seed = process.env.PG_IAM_PROXY_DIFF_SEED === undefined ? undefined : Number(process.env.PG_IAM_PROXY_DIFF_SEED);
const path = process.env.PG_IAM_PROXY_DIFF_PATH;
/** Seconds of searching, then of shrinking, per mode (a failing property must not run for hours). */
const searchSeconds = Number(process.env.PG_IAM_PROXY_DIFF_SECONDS ?? 60);
const shrinkSeconds = Number(process.env.PG_IAM_PROXY_DIFF_SHRINK_SECONDS ?? 60);

const db = await startTestDb();
t.teardown(() => db.destroy());
const h = await harness(db);
t.teardown(() => h.close());
t.setTimeout((2 * (searchSeconds + shrinkSeconds) + 60) * 1000);

t.test('the harness: the same clients run twice directly receive the same bytes (the grammar is deterministic alone)', async (t) => {
  const samples = fc.sample(scenario({ modes: ['transaction'] }), { numRuns: Number(process.env.PG_IAM_PROXY_DIFF_SELF_RUNS ?? 12), seed });
  const problems: string[] = [];
  for (const s of samples) {
    const first = await directRun(h, s);
    const again = await directRun(h, s);
    const diff = compare(first, again);
    if (diff.length) problems.push(`${diff.join('\n')}\n--- scenario ---\n${describeScenario(s)}`);
  }
  t.same(problems, [], `${samples.length} scenarios, each run twice`);
});

for (const mode of ['transaction', 'session'] as const) {
  t.test(`${mode} pooling: every client receives what it receives alone on a direct connection`, async (t) => {
    const r = await searchAndShrink(h, { modes: [mode], runs, searchSeconds, shrinkSeconds, seed, path });
    t.equal(r.failure, undefined, `${r.runs} runs from seed ${r.seed}: no client told apart from its direct run`);
  });
}
