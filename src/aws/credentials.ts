import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@aws-sdk/types';
import type { Logger } from 'pino';
import { type Clock, MIN_VALIDITY_MS, Renewing } from '../renewing.js';

/**
 * Renew AWS credentials once fewer than this many ms remain (docs/protocol.md F2): ten minutes leave room
 * for a source that is down to come back, retried with backoff, before the credentials in hand stop working.
 */
const AWS_REFRESH_AHEAD_MS = 10 * 60_000;

export interface CredentialsHolderOptions {
  /** Refresh in the background once fewer than this many ms remain (AWS_REFRESH_AHEAD_MS). */
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
 * One AWS identity's credentials, held by the renewing holder (src/renewing.ts): fetched once, refreshed
 * in the background before they expire, a failed refresh keeps the still-valid ones and retries with
 * backoff. The SDK's single providers do not memoize, so the proxy holds them itself.
 */
export class CredentialsHolder {
  private readonly held: Renewing<AwsCredentialIdentity>;

  constructor(
    provider: AwsCredentialIdentityProvider,
    private readonly options: CredentialsHolderOptions = {},
  ) {
    const minValidityMs = options.minValidityMs ?? MIN_VALIDITY_MS;
    const log = options.log;
    const now = options.now ?? Date.now;
    // forceRefresh: a memoizing provider would otherwise hand back the same expiring credentials.
    this.held = new Renewing(() => provider({ forceRefresh: true }), {
      expiresAt: (creds) => (creds.expiration ? creds.expiration.getTime() : Infinity),
      refreshAheadMs: options.refreshAheadMs ?? AWS_REFRESH_AHEAD_MS,
      minValidityMs,
      retryMs: options.retryMs,
      maxRetryMs: options.maxRetryMs,
      now,
      tooShort: (creds) =>
        new CredentialsExpiringError(creds.expiration!, options.source?.() ?? 'the credential source', minValidityMs, now()),
      fetched: (creds, recovered) => {
        if (recovered) log?.info({ accessKeyId: creds.accessKeyId }, 'AWS credentials available again');
        options.onRefresh?.(creds);
        log?.debug({ accessKeyId: creds.accessKeyId, expiration: creds.expiration?.toISOString() }, 'AWS credentials fetched');
      },
      failed: (err, { stillValid, retryInMs }) => {
        const advice = options.advice?.();
        const expiring = err instanceof CredentialsExpiringError;
        log?.warn(
          {
            err,
            keepUsing: stillValid !== undefined,
            ...(stillValid?.expiration ? { expiration: stillValid.expiration.toISOString() } : {}),
            ...(expiring ? { fetchedExpiration: err.expiration.toISOString(), retryInMs } : {}),
            // When the timer tries again: a terminal folds the repeats of this warning into "next try in N s".
            retryInSeconds: Math.round(retryInMs / 1000),
            ...(advice ? { advice } : {}),
          },
          expiring
            ? 'AWS credentials from the source are too close to expiry and it gives none newer: the proxy cannot renew them'
            : stillValid
              ? 'AWS credentials refresh failed; still using the current ones'
              : 'AWS credentials fetch failed',
        );
      },
    });
  }

  /** Credentials valid for at least `minValidityMs`; waits for a fetch only when none are. */
  get(): Promise<AwsCredentialIdentity> {
    return this.held.get();
  }

  /**
   * The server refused a token signed with `accessKeyId`. Static keys (no expiry) may have been rotated
   * in the shared credentials file since they were read: drop them, so the next get() reads the source
   * again. Expiring credentials are renewed on their own schedule, and other keys are not ours to drop.
   */
  invalidate(accessKeyId: string): void {
    if (!this.held.drop((current) => current.accessKeyId === accessKeyId && !current.expiration)) return;
    this.options.log?.info(
      { accessKeyId },
      'AWS static credentials dropped after the server refused a token signed with them: the next login reads them again',
    );
  }

  /** The credentials in hand, if still usable, without fetching (readiness). */
  peek(): AwsCredentialIdentity | undefined {
    return this.held.peek();
  }

  /**
   * The machine woke from a sleep its timers did not see: fetch now if a fetch is due by the wall clock
   * (credentials at their refresh time, or a retry after a failure), not otherwise: an MFA role must not
   * ask for a code after every nap.
   */
  renew(): void {
    this.held.renewIfDue();
  }

  /** Stop the background refresh (at shutdown). */
  close(): void {
    this.held.close();
  }
}
