// Simulated time for code that schedules with setTimeout and reads Date.now (the credentials holder):
// Node's MockTimers (node:test), driven in small steps with a turn of the event loop after each, so the
// promises a timer starts settle before the next step. setImmediate stays real: it is how we yield.
import { mock } from 'node:test';

export interface FakeTime {
  /** Move time on by `ms`, in steps of `stepMs`, letting what each step woke run to completion. */
  advance(ms: number, stepMs?: number): Promise<void>;
}

/** Fake setTimeout/clearTimeout and Date from `start` until `t` ends. */
export function fakeTime(t: { teardown(fn: () => void): void }, start = 1_800_000_000_000): FakeTime {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: start });
  t.teardown(() => mock.timers.reset());
  return {
    async advance(ms, stepMs = 100) {
      for (let done = 0; done < ms; done += stepMs) {
        mock.timers.tick(Math.min(stepMs, ms - done));
        await new Promise((resolve) => setImmediate(resolve));
      }
    },
  };
}

/** One turn of the event loop: lets promises settle without moving simulated time. */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
