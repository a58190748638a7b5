// The differential test of pooling: random protocol sequences from several clients at once through pools of
// one and two servers, in transaction and session mode; every message each client receives must be what its
// sequence gets alone on a direct connection (test/support/differential.ts has the grammar and the rules).
//   PG_IAM_PROXY_DIFF_RUNS=5000 raises the number of runs (the soak: npm run soak:diff -- MINUTES);
//   PG_IAM_PROXY_DIFF_SEED=n replays a run.
import t from 'tap';
import fc from 'fast-check';
import { startTestDb } from './support/testdb.js';
import { check, harness, scenario } from './support/differential.js';

const runs = Number(process.env.PG_IAM_PROXY_DIFF_RUNS ?? 100);
const seed = process.env.PG_IAM_PROXY_DIFF_SEED === undefined ? undefined : Number(process.env.PG_IAM_PROXY_DIFF_SEED);
/** Seconds of searching and shrinking per mode before the verdict (a failing property must not run for hours). */
const budget = Number(process.env.PG_IAM_PROXY_DIFF_SECONDS ?? 50);

/** Fails on the relay as it is; the rewrite removes the mark (PG_IAM_PROXY_RUN_TODO=1 runs it meanwhile). */
const todo = process.env.PG_IAM_PROXY_RUN_TODO ? {} : { todo: 'fails before the relay rewrite' };

const db = await startTestDb();
t.teardown(() => db.destroy());
const h = await harness(db);
t.teardown(() => h.close());
t.setTimeout((2 * budget + 60) * 1000);

for (const mode of ['transaction', 'session'] as const) {
  t.test(`${mode} pooling: every client receives what it receives alone on a direct connection`, todo, async (t) => {
    await fc.assert(
      fc.asyncProperty(scenario({ modes: [mode] }), (s) => check(h, s)),
      { numRuns: runs, seed, interruptAfterTimeLimit: budget * 1000, markInterruptAsFailure: false, endOnFailure: false },
    );
    t.pass(`${runs} runs`);
  });
}
