// OAuth access tokens as passwords (Azure's Entra ID tokens, Cloud SQL's IAM logins): one token per
// identity, whatever the DB user (the server checks the principal against the user), held and renewed
// before it expires the way the AWS credentials holder keeps credentials: single flight for a burst of
// logins, a background renewal ahead of expiry, and after a failure the still-valid token kept and the
// fetch retried with backoff.
import type { Logger } from 'pino';
import type { Token } from '../cloud.js';
import { redactSecrets } from '../log.js';

/** A token from the cloud's SDK. `value` is never logged nor put in an error. */
export interface BearerToken extends Token {
  /** When the token stops working, ms since the epoch. */
  readonly expiresAt: number;
}

/** One fetch from the cloud's SDK: the token, its end, and who it names (log fields, never a secret). */
export type BearerFetch = () => Promise<{ value: string; expiresAt: number; signer: Readonly<Record<string, string>> }>;

export interface BearerTokensOptions {
  /** Who the tokens are from, in people's words (the credential chain), for the log and errors. */
  readonly label: string;
  /**
   * Renew in the background once fewer than this many ms remain: 4.5 minutes by default, inside the 5
   * minutes within which the SDKs (MSAL, google-auth-library) stop handing out their cached token, so that
   * a renewal gets a new one.
   */
  readonly refreshAheadMs?: number;
  /** A token with fewer ms left than this is never used: it must outlive the login. */
  readonly minValidityMs?: number;
  /** After a failed fetch, wait this long (doubling, capped) before trying again. */
  readonly retryMs?: number;
  readonly maxRetryMs?: number;
  readonly now?: () => number;
  readonly log?: Logger | undefined;
  /** After each successful fetch (metrics). */
  readonly onRefresh?: () => void;
}

/** A refused token is fetched anew at most this often: a client naming users that do not exist must not make every login a fetch. */
const REFETCH_EVERY_MS = 60_000;

export class BearerTokens {
  private current: BearerToken | undefined;
  private inflight: Promise<BearerToken> | undefined;
  private lastError: unknown;
  private nextAttemptAt = 0;
  private refreshAt = Infinity;
  private retryMs: number;
  private refetchedAt = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private readonly refreshAheadMs: number;
  private readonly minValidityMs: number;
  private readonly baseRetryMs: number;
  private readonly maxRetryMs: number;
  private readonly now: () => number;
  readonly label: string;

  constructor(
    private readonly fetchToken: BearerFetch,
    private readonly options: BearerTokensOptions,
  ) {
    this.label = options.label;
    this.refreshAheadMs = options.refreshAheadMs ?? 270_000;
    this.minValidityMs = options.minValidityMs ?? 60_000;
    this.baseRetryMs = this.retryMs = options.retryMs ?? 1_000;
    this.maxRetryMs = options.maxRetryMs ?? 60_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * A token valid for at least `minValidityMs`; waits for a fetch only when none is in hand. `notThis`: the
   * server refused it, so a new one is fetched (at most once a minute; the SDK may still hand back the same).
   */
  async get(notThis?: Token): Promise<BearerToken> {
    const current = this.peek();
    if (current && notThis?.value === current.value && this.now() - this.refetchedAt >= REFETCH_EVERY_MS) {
      this.refetchedAt = this.now();
      return this.refresh();
    }
    if (current) {
      if (this.now() >= this.refreshAt && this.now() >= this.nextAttemptAt) this.refresh().catch(() => undefined);
      return current;
    }
    // Without a usable token, a burst of clients must not become a burst of fetches: within the backoff
    // after a failure, everyone hears that failure.
    if (this.lastError !== undefined && this.now() < this.nextAttemptAt && !this.inflight) throw this.lastError;
    return this.refresh();
  }

  /** The token in hand, if still usable, without fetching (readiness). */
  peek(): BearerToken | undefined {
    return this.current && this.current.expiresAt - this.now() > this.minValidityMs ? this.current : undefined;
  }

  /** Fetch at start, so the first client does not wait; resolves to whether a token came. */
  async warm(): Promise<boolean> {
    return this.get().then(
      () => true,
      () => false,
    );
  }

  /** Stop the background renewal (at shutdown). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private refresh(): Promise<BearerToken> {
    this.inflight ??= this.fetch().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private wakeAt(at: number): void {
    clearTimeout(this.timer);
    // unref: a pending renewal never keeps the process alive; capped at what timers take.
    this.timer = setTimeout(() => this.refresh().catch(() => undefined), Math.min(Math.max(0, at - this.now()), 2 ** 31 - 1)).unref();
  }

  /**
   * `refreshAheadMs` before the end; a token issued with less life than that is renewed halfway through its
   * usable time instead, never sooner than the base retry delay.
   */
  private refreshTime(expiresAt: number): number {
    const now = this.now();
    const ahead = expiresAt - this.refreshAheadMs;
    return ahead > now ? ahead : now + Math.max(this.baseRetryMs, (expiresAt - this.minValidityMs - now) / 2);
  }

  private async fetch(): Promise<BearerToken> {
    try {
      const signedAt = this.now();
      const got = await this.fetchToken();
      if (typeof got.value !== 'string' || got.value === '') throw new Error(`${this.label} returned an empty token`);
      if (got.expiresAt - this.now() <= this.minValidityMs) {
        throw new Error(
          `${this.label} returned a token that expires at ${new Date(got.expiresAt).toISOString()}, too soon to log in with; renew the credentials where they come from`,
        );
      }
      const token: BearerToken = { value: got.value, expiresAt: got.expiresAt, signedAt, signer: got.signer };
      if (this.lastError !== undefined) this.options.log?.info({ signer: token.signer }, 'access tokens available again');
      this.current = token;
      this.lastError = undefined;
      this.retryMs = this.baseRetryMs;
      this.nextAttemptAt = 0;
      this.refreshAt = this.refreshTime(token.expiresAt);
      this.wakeAt(this.refreshAt);
      this.options.onRefresh?.();
      this.options.log?.debug({ signer: token.signer, expiresAt: new Date(token.expiresAt).toISOString() }, 'access token fetched');
      return token;
    } catch (err) {
      this.lastError = err;
      this.nextAttemptAt = this.now() + this.retryMs;
      this.retryMs = Math.min(this.retryMs * 2, this.maxRetryMs);
      this.wakeAt(this.nextAttemptAt);
      const stillValid = this.peek();
      this.options.log?.warn(
        {
          reason: redactSecrets((err as Error).message),
          keepUsing: stillValid !== undefined,
          retryInSeconds: Math.round((this.nextAttemptAt - this.now()) / 1000),
        },
        stillValid ? `${this.label}: token renewal failed; still using the current token` : `${this.label}: no access token`,
      );
      if (stillValid) return stillValid;
      throw err;
    }
  }
}

/**
 * The claims of a JWT, read without verifying it (the server verifies; the proxy reads them only to say
 * who a token names and for what). Undefined for a token that is not a JWT (Google's access tokens).
 */
export function jwtClaims(token: string): Record<string, unknown> | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const claims: unknown = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    return claims !== null && typeof claims === 'object' && !Array.isArray(claims) ? (claims as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
