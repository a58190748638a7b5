// A value that expires (a cloud's credentials, an access token), fetched once and held: single flight for
// a burst of callers, renewed in the background ahead of its end (a timer wakes for it, so an idle value
// is renewed too), and after a failed fetch the still-valid value kept and the fetch retried with backoff.
// Cloud-neutral: it knows a value only by when it ends; what a value is, and what to log, is the caller's.

/** Seconds are for people; the holder counts milliseconds on an injectable clock. */
export type Clock = () => number;

/** Node's timers take a delay of at most 2^31 - 1 ms (a signed 32-bit count); a longer one fires at once. */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/** A delay for setTimeout until `ms` from now: never negative, never longer than timers take. */
export const timerDelay = (ms: number): number => Math.min(Math.max(0, ms), MAX_TIMER_DELAY_MS);

/**
 * A value with less than this left is never handed out: it must outlive the login it is used for (the
 * connection, the TLS handshake, the server checking it), with room for a clock a little off.
 */
export const MIN_VALIDITY_MS = 60_000;
/** The first retry after a failed fetch comes this soon: a blip (a refused connection) is over by then. */
const RETRY_MS = 1_000;
/** Retries double up to this: a source down for long is asked once a minute, not hammered. */
const MAX_RETRY_MS = 60_000;

export interface RenewingOptions<T> {
  /** When `value` stops working, ms since the epoch; Infinity for a value that never ends. */
  readonly expiresAt: (value: T) => number;
  /** Renew in the background once fewer than this many ms remain. */
  readonly refreshAheadMs: number;
  /** A value with fewer ms left than this is never used (MIN_VALIDITY_MS). */
  readonly minValidityMs?: number | undefined;
  /** After a failed fetch, wait this long (doubling, capped at `maxRetryMs`) before trying again. */
  readonly retryMs?: number | undefined;
  readonly maxRetryMs?: number | undefined;
  readonly now?: Clock | undefined;
  /**
   * The error for a fetched value that is already too close to its end to use: a failure like any other
   * (backoff, callers told why), or the holder would fetch it again at once, for as long as the source
   * hands it out.
   */
  readonly tooShort: (value: T) => unknown;
  /** After each successful fetch; `recovered` when fetches had been failing. */
  readonly fetched?: (value: T, recovered: boolean) => void;
  /** After each failed fetch: the value still in hand, if any (it keeps being used), and when the retry comes. */
  readonly failed?: (err: unknown, outcome: { readonly stillValid: T | undefined; readonly retryInMs: number }) => void;
}

const ignore = (): undefined => undefined;

export class Renewing<T> {
  private current: T | undefined;
  private inflight: Promise<T> | undefined;
  private lastError: unknown;
  private nextAttemptAt = 0;
  /** When to renew the current value behind the callers' backs. */
  private refreshAt = Infinity;
  /** Wakes the holder at `refreshAt` (or the next retry), so an idle value is renewed too. */
  private timer: NodeJS.Timeout | undefined;
  private retryMs: number;
  private readonly minValidityMs: number;
  private readonly baseRetryMs: number;
  private readonly maxRetryMs: number;
  readonly now: Clock;

  constructor(
    private readonly fetchValue: () => Promise<T>,
    private readonly options: RenewingOptions<T>,
  ) {
    this.minValidityMs = options.minValidityMs ?? MIN_VALIDITY_MS;
    this.baseRetryMs = this.retryMs = options.retryMs ?? RETRY_MS;
    this.maxRetryMs = options.maxRetryMs ?? MAX_RETRY_MS;
    this.now = options.now ?? Date.now;
  }

  /** A value valid for at least `minValidityMs`; waits for a fetch only when none is in hand. */
  async get(): Promise<T> {
    const current = this.peek();
    if (current !== undefined) {
      // Renew behind the caller's back; a failure is reported and retried later.
      if (this.now() >= this.refreshAt && this.now() >= this.nextAttemptAt) this.refresh().catch(ignore);
      return current;
    }
    // Without a usable value, a burst of callers must not become a burst of fetches: within the backoff
    // after a failure, everyone hears that failure.
    if (this.lastError !== undefined && this.now() < this.nextAttemptAt && !this.inflight) throw this.lastError;
    return this.refresh();
  }

  /** The value in hand, if still usable, without fetching (readiness). */
  peek(): T | undefined {
    return this.current !== undefined && this.msLeft(this.current) > this.minValidityMs ? this.current : undefined;
  }

  /** Fetch now, joining a fetch under way; a failure with a value still usable resolves to that value. */
  refresh(): Promise<T> {
    this.inflight ??= this.fetch().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  /**
   * Fetch now if a fetch is due by the clock (the value at its renewal time, or a retry after a failure),
   * not otherwise: for a timer that did not fire on time (a machine that slept).
   */
  renewIfDue(): void {
    const now = this.now();
    if (now < this.nextAttemptAt) return;
    if (this.current !== undefined && now < this.refreshAt) return;
    this.refresh().catch(ignore);
  }

  /** Forget the value in hand if `matches` says so, so the next get() fetches; whether it was dropped. */
  drop(matches: (value: T) => boolean): boolean {
    if (this.current === undefined || !matches(this.current)) return false;
    this.current = undefined;
    return true;
  }

  /** Stop the background renewal (at shutdown). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private msLeft(value: T): number {
    return this.options.expiresAt(value) - this.now();
  }

  private wakeAt(at: number): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!Number.isFinite(at)) return;
    // unref: a pending renewal never keeps the process alive.
    this.timer = setTimeout(() => this.refresh().catch(ignore), timerDelay(at - this.now())).unref();
  }

  /**
   * `refreshAheadMs` before the end; a value issued with less life than that (a short session) is renewed
   * halfway through its usable time instead, so it is not fetched again on every call. Never sooner than
   * the base retry delay: halving what is left of a value that a source keeps handing back unchanged
   * (exported keys) would otherwise fetch in an ever tighter series near the end.
   */
  private refreshTime(value: T): number {
    const end = this.options.expiresAt(value);
    const ahead = end - this.options.refreshAheadMs;
    const now = this.now();
    return ahead > now ? ahead : now + Math.max(this.baseRetryMs, (end - this.minValidityMs - now) / 2);
  }

  private async fetch(): Promise<T> {
    try {
      const value = await this.fetchValue();
      if (this.msLeft(value) <= this.minValidityMs) throw this.options.tooShort(value);
      const recovered = this.lastError !== undefined;
      this.current = value;
      this.lastError = undefined;
      this.retryMs = this.baseRetryMs;
      this.nextAttemptAt = 0;
      this.refreshAt = this.refreshTime(value);
      this.wakeAt(this.refreshAt);
      this.options.fetched?.(value, recovered);
      return value;
    } catch (err) {
      this.lastError = err;
      this.nextAttemptAt = this.now() + this.retryMs;
      this.retryMs = Math.min(this.retryMs * 2, this.maxRetryMs);
      // Retry on a timer: the value comes back (and readiness with it) without waiting for a caller.
      this.wakeAt(this.nextAttemptAt);
      const stillValid = this.peek();
      this.options.failed?.(err, { stillValid, retryInMs: this.nextAttemptAt - this.now() });
      if (stillValid !== undefined) return stillValid;
      throw err;
    }
  }
}
