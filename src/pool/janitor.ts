// The pools' periodic work in one place, as pgbouncer's janitor: one timer per instance's pools, running
// only while there is something to look after (idle servers), that closes a server idle past
// --server-idle-timeout or parked past --server-lifetime. The deadlines tied to one event (a login's
// back-off, the grace before a busy pool gives way) stay timers of their own, in pool.ts.

/** The longest a sweep waits: an idle server is closed at most this long after its time is up. */
export const JANITOR_PERIOD_MS = 1_000;

export class Janitor {
  private timer: NodeJS.Timeout | undefined;
  private readonly periodMs: number;

  /**
   * `sweep` looks after the pools at `now` (ms since the epoch) and says whether anything is left to
   * look after; `shortestMs`: the shortest timeout swept for (a sweep comes at least that often).
   */
  constructor(
    private readonly sweep: (now: number) => boolean,
    shortestMs: number,
  ) {
    this.periodMs = Math.max(1, Math.min(JANITOR_PERIOD_MS, shortestMs));
  }

  /** There is something to look after: sweep until there is not. */
  wake(): void {
    this.timer ??= setInterval(() => {
      if (!this.sweep(Date.now())) this.stop();
    }, this.periodMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
