// A laptop that sleeps: Node's timers run on a clock that stops while the machine is suspended, so a
// refresh timer set for "in 30 minutes" can fire hours of wall-clock time late, after credentials and
// tokens have expired. Their ages are judged by the wall clock (Date.now) wherever they are used; this
// notices the wake-up itself (a tick that comes far later by the wall clock than it was set for), so the
// credentials are renewed at once rather than by the first client after it.

/** How often the wall clock is looked at, and how late a tick may be before it counts as a sleep. */
export const WAKE_TICK_MS = 15_000;
export const WAKE_SLACK_MS = 60_000;

export interface WakeWatchOptions {
  readonly tickMs?: number;
  readonly slackMs?: number;
  readonly now?: () => number;
}

export class WakeWatch {
  private readonly timer: NodeJS.Timeout;
  private last: number;

  /** `woke` hears how long the machine slept (about: the lateness of the tick). */
  constructor(woke: (sleptMs: number) => void, options: WakeWatchOptions = {}) {
    const tick = options.tickMs ?? WAKE_TICK_MS;
    const slack = options.slackMs ?? WAKE_SLACK_MS;
    const now = options.now ?? Date.now;
    this.last = now();
    // unref: watching never keeps the process alive.
    this.timer = setInterval(() => {
      const at = now();
      const late = at - this.last - tick;
      this.last = at;
      if (late > slack) woke(late);
    }, tick).unref();
  }

  close(): void {
    clearInterval(this.timer);
  }
}
