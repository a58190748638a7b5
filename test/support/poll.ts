// Waiting for a state another process owns (a backend in pg_stat_activity) where no event tells: a bounded
// poll, failing with what it waited for.
import { setTimeout as delay } from 'node:timers/promises';

export async function waitFor(check: () => Promise<boolean>, what = 'a condition', timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs / 1000} s for ${what}`);
    await delay(20);
  }
}
