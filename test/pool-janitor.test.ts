// The pools' janitor: sweeps while there is something to look after, sleeps when there is not, and wakes
// again when asked.
import t from 'tap';
import { Janitor, JANITOR_PERIOD_MS } from '../src/pool/janitor.js';

t.test('sweeps until nothing is left, then sleeps until woken', async (t) => {
  // The janitor's timer does not keep the process alive (unref): this one does, while the test waits.
  const alive = setInterval(() => undefined, 60_000);
  t.teardown(() => clearInterval(alive));
  let left = 2;
  let sweeps = 0;
  let swept: () => void = () => undefined;
  const janitor = new Janitor(() => {
    sweeps++;
    swept();
    return --left > 0;
  }, 5);
  const rounds = (n: number) =>
    new Promise<void>((resolve) => {
      const goal = sweeps + n;
      swept = () => {
        if (sweeps >= goal) resolve();
      };
    });
  const two = rounds(2);
  janitor.wake();
  janitor.wake(); // once awake, asking again adds no second timer
  await two;
  t.equal(sweeps, 2, 'two rounds, the second found nothing left');
  t.equal((janitor as unknown as { timer: unknown }).timer, undefined, 'asleep');
  left = 1;
  const one = rounds(1);
  janitor.wake();
  await one;
  t.equal(sweeps, 3, 'woken again');
  janitor.stop();
});

t.test('sweeps at least as often as the shortest timeout, at most every period', async (t) => {
  const period = (shortestMs: number) => (new Janitor(() => false, shortestMs) as unknown as { periodMs: number }).periodMs;
  t.equal(period(50), 50);
  t.equal(period(600_000), JANITOR_PERIOD_MS);
  t.equal(period(0), 1, 'a zero timeout (closed at release) still gives a timer a period');
});
