import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@aws-sdk/types';
import type { Logger } from 'pino';

/** Seconds are for people; the holder counts milliseconds on an injectable clock. */
export type Clock = () => number;

export interface CredentialsHolderOptions {
  /** Refresh in the background once fewer than this many ms remain (docs/protocol.md F2). */
  refreshAheadMs?: number;
  /** Credentials with fewer ms left than this are never used: a token must outlive its login. */
  minValidityMs?: number;
  /** After a failed refresh, wait this long (doubling, capped) before trying again. */
  retryMs?: number;
  maxRetryMs?: number;
  now?: Clock;
  log?: Logger | undefined;
  /** Called after each successful fetch (metrics, the identity's expiry warnings). */
  onRefresh?: (credentials: AwsCredentialIdentity) => void;
  /** What the user can do when a refresh fails (e.g. `aws sso login`), added to the warning. */
  advice?: () => string | undefined;
  /** Where the credentials come from, in people's words, for the error when only the user can renew them. */
  source?: () => string | undefined;
}

/**
 * The source answered, but with credentials too close to their end to sign with (or past it): exported
 * keys with AWS_CREDENTIAL_EXPIRATION, a credential_process handing out what it cached. Fetching again
 * cannot help until someone renews them where they come from, so it is a failure, retried with backoff.
 */
export class CredentialsExpiringError extends Error {
  readonly code = 'CREDENTIALS_EXPIRING';

  constructor(
    readonly expiration: Date,
    source: string,
    minValidityMs: number,
    now: number,
  ) {
    const at = expiration.toISOString();
    const when = expiration.getTime() <= now ? `expired at ${at}` : `expire at ${at}, in less than ${Math.round(minValidityMs / 1000)} s`;
    super(`the AWS credentials from ${source} ${when}, and fetching again gives none newer: renew them where they come from`);
    this.name = 'CredentialsExpiringError';
  }
}

/**
 * One AWS identity's credentials, fetched once and reused: single flight, refreshed in the background
 * before they expire, a failed refresh keeps the still-valid ones and retries with backoff. The SDK's
 * single providers do not memoize and fromNodeProviderChain re-resolves on every call once less than
 * 5 minutes remain (docs/protocol.md), so the proxy holds them itself.
 */
export class CredentialsHolder {
  private current: AwsCredentialIdentity | undefined;
  private inflight: Promise<AwsCredentialIdentity> | undefined;
  private nextAttemptAt = 0;
  /** When to refresh the current credentials behind the callers' backs. */
  private refreshAt = Infinity;
  /** Wakes the holder at `refreshAt` (or the next retry) so idle credentials are renewed too. */
  private timer: NodeJS.Timeout | undefined;
  private lastError: unknown;
  private retryMs: number;
  private readonly refreshAheadMs: number;
  private readonly minValidityMs: number;
  private readonly baseRetryMs: number;
  private readonly maxRetryMs: number;
  private readonly now: Clock;

  constructor(
    private readonly provider: AwsCredentialIdentityProvider,
    private readonly options: CredentialsHolderOptions = {},
  ) {
    this.refreshAheadMs = options.refreshAheadMs ?? 10 * 60_000;
    this.minValidityMs = options.minValidityMs ?? 60_000;
    this.baseRetryMs = this.retryMs = options.retryMs ?? 1_000;
    this.maxRetryMs = options.maxRetryMs ?? 60_000;
    this.now = options.now ?? Date.now;
  }

  /** Credentials valid for at least `minValidityMs`; waits for a fetch only when none are. */
  async get(): Promise<AwsCredentialIdentity> {
    const current = this.current;
    const left = current ? this.msLeft(current) : 0;
    if (current && left > this.minValidityMs) {
      if (this.now() >= this.refreshAt && this.now() >= this.nextAttemptAt) {
        // Refresh behind the caller's back; failures are logged and retried later.
        this.refresh().catch(() => undefined);
      }
      return current;
    }
    // Without usable credentials, a burst of clients must not become a burst of fetches: within the
    // backoff after a failure, everyone hears that failure.
    if (this.lastError !== undefined && this.now() < this.nextAttemptAt && !this.inflight) throw this.lastError;
    return this.refresh();
  }

  /**
   * The server refused a token signed with `accessKeyId`. Static keys (no expiry) may have been rotated
   * in the shared credentials file since they were read: drop them, so the next get() reads the source
   * again. Expiring credentials are renewed on their own schedule, and other keys are not ours to drop.
   */
  invalidate(accessKeyId: string): void {
    const current = this.current;
    if (!current || current.accessKeyId !== accessKeyId || current.expiration) return;
    this.current = undefined;
    this.options.log?.info(
      { accessKeyId },
      'AWS static credentials dropped after the server refused a token signed with them: the next login reads them again',
    );
  }

  /** The credentials in hand, if still usable, without fetching (readiness). */
  peek(): AwsCredentialIdentity | undefined {
    return this.current && this.msLeft(this.current) > this.minValidityMs ? this.current : undefined;
  }

  private msLeft(creds: AwsCredentialIdentity): number {
    return creds.expiration ? creds.expiration.getTime() - this.now() : Infinity;
  }

  /**
   * The machine woke from a sleep its timers did not see: fetch now if a fetch is due by the wall clock
   * (credentials at their refresh time, or a retry after a failure), not otherwise: an MFA role must not
   * ask for a code after every nap.
   */
  renew(): void {
    const now = this.now();
    if (now < this.nextAttemptAt) return;
    if (this.current && now < this.refreshAt) return;
    this.refresh().catch(() => undefined);
  }

  /** Stop the background refresh (at shutdown). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private wakeAt(at: number): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!Number.isFinite(at)) return;
    // unref: a pending refresh never keeps the process alive. The delay is capped at what timers take.
    this.timer = setTimeout(() => this.refresh().catch(() => undefined), Math.min(Math.max(0, at - this.now()), 2 ** 31 - 1)).unref();
  }

  /**
   * `refreshAheadMs` before expiry; credentials issued with less life than that (short STS sessions) are
   * refreshed halfway through their usable time instead, so they are not fetched again on every call.
   * Never sooner than the base retry delay: halving what is left of credentials that a source keeps
   * handing back unchanged (exported keys) would otherwise fetch in an ever tighter series near the end.
   */
  private refreshTime(creds: AwsCredentialIdentity): number {
    if (!creds.expiration) return Infinity;
    const end = creds.expiration.getTime();
    const ahead = end - this.refreshAheadMs;
    const now = this.now();
    return ahead > now ? ahead : now + Math.max(this.baseRetryMs, (end - this.minValidityMs - now) / 2);
  }

  private refresh(): Promise<AwsCredentialIdentity> {
    this.inflight ??= this.fetch().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async fetch(): Promise<AwsCredentialIdentity> {
    try {
      // forceRefresh: a memoizing provider would otherwise hand back the same expiring credentials.
      const creds = await this.provider({ forceRefresh: true });
      // Too close to their end to sign with: a failure like any other (backoff, callers told why), or the
      // holder would fetch them again at once, and again, for as long as the source hands them out.
      if (this.msLeft(creds) <= this.minValidityMs) {
        const source = this.options.source?.() ?? 'the credential source';
        throw new CredentialsExpiringError(creds.expiration!, source, this.minValidityMs, this.now());
      }
      if (this.lastError !== undefined) this.options.log?.info({ accessKeyId: creds.accessKeyId }, 'AWS credentials available again');
      this.current = creds;
      this.refreshAt = this.refreshTime(creds);
      this.lastError = undefined;
      this.retryMs = this.baseRetryMs;
      this.nextAttemptAt = 0;
      this.wakeAt(this.refreshAt);
      this.options.onRefresh?.(creds);
      this.options.log?.debug({ accessKeyId: creds.accessKeyId, expiration: creds.expiration?.toISOString() }, 'AWS credentials fetched');
      return creds;
    } catch (err) {
      this.lastError = err;
      this.nextAttemptAt = this.now() + this.retryMs;
      this.retryMs = Math.min(this.retryMs * 2, this.maxRetryMs);
      const stillValid = this.peek();
      // Retry on a timer: credentials come back (and readiness with them) without waiting for a client.
      this.wakeAt(this.nextAttemptAt);
      const advice = this.options.advice?.();
      const expiring = err instanceof CredentialsExpiringError;
      this.options.log?.warn(
        {
          err,
          keepUsing: stillValid !== undefined,
          ...(stillValid?.expiration ? { expiration: stillValid.expiration.toISOString() } : {}),
          ...(expiring ? { fetchedExpiration: err.expiration.toISOString(), retryInMs: this.nextAttemptAt - this.now() } : {}),
          // When the timer tries again: a terminal folds the repeats of this warning into "next try in N s".
          retryInSeconds: Math.round((this.nextAttemptAt - this.now()) / 1000),
          ...(advice ? { advice } : {}),
        },
        expiring
          ? 'AWS credentials from the source are too close to expiry and it gives none newer: the proxy cannot renew them'
          : stillValid
            ? 'AWS credentials refresh failed; still using the current ones'
            : 'AWS credentials fetch failed',
      );
      if (stillValid) return stillValid;
      throw err;
    }
  }
}
