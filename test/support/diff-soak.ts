// The differential soak: the property of pool-differential.test.ts for N minutes, with longer sequences,
// until time is up or a difference is found (then shrunk, printed, and the exit status is 1).
//   npm run soak -- 30 --differential                 (half an hour; both modes)
//   npm run soak -- 30 --differential transaction     (one mode)
//   PG_IAM_PROXY_DIFF_SEED=n [PG_IAM_PROXY_DIFF_PATH=p] replays a failure (the failure prints both).
import { cp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestDb } from './testdb.js';
import { harness, searchAndShrink, type PropertyResult } from './differential.js';
import { PgConn } from './pgwire.js';
import type { PoolMode } from '../../src/pool/pool.js';

export async function soakDifferential(minutes: number, modes: PoolMode[]): Promise<number> {
  const db = await startTestDb({ diagnostics: true });
  const h = await harness(db);
  const started = Date.now();
  let r: PropertyResult;
  try {
    r = await searchAndShrink(h, {
      modes,
      runs: Number.MAX_SAFE_INTEGER,
      searchSeconds: minutes * 60,
      shrinkSeconds: Math.max(120, minutes * 15),
      maxSteps: 10,
      seed: process.env.PG_IAM_PROXY_DIFF_SEED === undefined ? undefined : Number(process.env.PG_IAM_PROXY_DIFF_SEED),
      path: process.env.PG_IAM_PROXY_DIFF_PATH,
    });
  } finally {
    await h.close();
    // A server process that crashed (the soak has met PostgreSQL's own segfaults): what it was running, whose
    // it was, and the log and core file kept for gdb.
    const log = await readFile(join(db.dir, 'postgres.log'), 'utf8').catch(() => '');
    const lines = log.split('\n');
    let crashed = false;
    for (const [i, line] of lines.entries()) {
      const m = /server process \(PID (\d+)\) was terminated by signal/.exec(line);
      if (!m) continue;
      crashed = true;
      const whose = PgConn.directPids.has(Number(m[1])) ? 'a direct connection' : "the proxy's server";
      process.stderr.write(`postgres.log (${whose}): ${line}\n${lines[i + 1] ?? ''}\n`);
    }
    if (crashed) {
      const keep = join(tmpdir(), `pg-iam-diff-soak-crash-${Date.now()}`);
      const pgdata = join(db.dir, 'pgdata');
      const cores = (await readdir(pgdata).catch(() => [] as string[])).filter((f) => f.startsWith('core'));
      await cp(join(db.dir, 'postgres.log'), join(keep, 'postgres.log'));
      for (const core of cores) await cp(join(pgdata, core), join(keep, core));
      process.stderr.write(`kept postgres.log and ${cores.length} core file(s) in ${keep}\n`);
    }
    await db.destroy();
  }
  console.log(
    JSON.stringify({ minutes, modes, seed: r.seed, runs: r.runs, seconds: Math.round((Date.now() - started) / 1000), failed: !!r.failure }),
  );
  if (r.failure) {
    console.error(r.failure);
    return 1;
  }
  return 0;
}
