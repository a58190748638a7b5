// OAuth access tokens as passwords (Azure's Entra ID tokens, Cloud SQL's IAM logins): one token per
// identity, whatever the DB user (the server checks the principal against the user), held by the renewing
// holder (src/renewing.ts) as the AWS credentials are: single flight for a burst of logins, a background
// renewal ahead of expiry, and after a failure the still-valid token kept and the fetch retried with backoff.
import type { Logger } from 'pino';
import type { Token } from '../cloud.js';
import { redactSecrets } from '../log.js';
import { Renewing } from '../renewing.js';

/** A token from the cloud's SDK. `value` is never logged nor put in an error. */
export interface BearerToken extends Token {
  /** When the token stops working, ms since the epoch. */
  readonly expiresAt: number;
}

/** One fetch from the cloud's SDK: the token, its end, and who it names (log fields, never a secret). */
export type BearerFetch = () => Promise<{ value: string; expiresAt: number; signer: Readonly<Record<string, string>> }>;

/**
 * The SDKs (MSAL, google-auth-library) hand back their cached token until it is within five minutes of its
 * end, and fetch a new one only then.
 */
const SDK_CACHE_MARGIN_MS = 5 * 60_000;
/**
 * Renew once fewer than 4.5 minutes remain: inside the SDKs' five-minute margin, so that a renewal gets a
 * new token rather than the cached one back, with room for the renewal before the token ends.
 */
const BEARER_REFRESH_AHEAD_MS = SDK_CACHE_MARGIN_MS - 30_000;

export interface BearerTokensOptions {
  /** Who the tokens are from, in people's words (the credential chain), for the log and errors. */
  readonly label: string;
  /** Renew in the background once fewer than this many ms remain (BEARER_REFRESH_AHEAD_MS). */
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
  private readonly held: Renewing<BearerToken>;
  private refetchedAt = -Infinity;
  readonly label: string;

  constructor(fetchToken: BearerFetch, options: BearerTokensOptions) {
    const label = (this.label = options.label);
    const log = options.log;
    const now = options.now ?? Date.now;
    const fetch = async (): Promise<BearerToken> => {
      const signedAt = now();
      const got = await fetchToken();
      if (typeof got.value !== 'string' || got.value === '') throw new Error(`${label} returned an empty token`);
      return { value: got.value, expiresAt: got.expiresAt, signedAt, signer: got.signer };
    };
    this.held = new Renewing(fetch, {
      expiresAt: (token) => token.expiresAt,
      refreshAheadMs: options.refreshAheadMs ?? BEARER_REFRESH_AHEAD_MS,
      minValidityMs: options.minValidityMs,
      retryMs: options.retryMs,
      maxRetryMs: options.maxRetryMs,
      now,
      tooShort: (token) =>
        new Error(
          `${label} returned a token that expires at ${new Date(token.expiresAt).toISOString()}, too soon to log in with; renew the credentials where they come from`,
        ),
      fetched: (token, recovered) => {
        if (recovered) log?.info({ signer: token.signer }, 'access tokens available again');
        options.onRefresh?.();
        log?.debug({ signer: token.signer, expiresAt: new Date(token.expiresAt).toISOString() }, 'access token fetched');
      },
      failed: (err, { stillValid, retryInMs }) => {
        log?.warn(
          {
            reason: redactSecrets((err as Error).message),
            keepUsing: stillValid !== undefined,
            retryInSeconds: Math.round(retryInMs / 1000),
          },
          stillValid ? `${label}: token renewal failed; still using the current token` : `${label}: no access token`,
        );
      },
    });
  }

  /**
   * A token valid for at least `minValidityMs`; waits for a fetch only when none is in hand. `notThis`: the
   * server refused it, so a new one is fetched (at most once a minute; the SDK may still hand back the same).
   */
  async get(notThis?: Token): Promise<BearerToken> {
    const current = this.held.peek();
    const now = this.held.now();
    if (current && notThis?.value === current.value && now - this.refetchedAt >= REFETCH_EVERY_MS) {
      this.refetchedAt = now;
      return this.held.refresh();
    }
    return this.held.get();
  }

  /** The token in hand, if still usable, without fetching (readiness). */
  peek(): BearerToken | undefined {
    return this.held.peek();
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
    this.held.close();
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
