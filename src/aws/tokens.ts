import type { AwsCredentialIdentity } from '@aws-sdk/types';
import type { Clock, CredentialsHolder } from './credentials.js';

// The RDS signer loads on first use: start-up to listening stays short.
let signer: Promise<typeof import('@aws-sdk/rds-signer')> | undefined;

/** What a token is signed for: the exact endpoint name and port, the region, the DB user. */
export interface TokenScope {
  readonly host: string;
  readonly port: number;
  readonly region: string;
  readonly user: string;
}

export interface IamToken {
  /** The password to send. Never log it, never put it in an error. */
  readonly value: string;
  readonly scope: TokenScope;
  readonly accessKeyId: string;
  readonly signedAt: number;
  /** When the server stops accepting it: 15 minutes after signing, or the credentials' expiry. */
  readonly expiresAt: number;
}

/** The seam the session uses: tests swap it, the engine shares one per identity. */
export interface TokenSource {
  /** A token for `scope`, reused while fresh. `notThis`: a token the server just rejected. */
  get(scope: TokenScope, notThis?: IamToken): Promise<IamToken>;
}

/** RDS accepts a token for 900 s after X-Amz-Date. */
export const TOKEN_LIFETIME_MS = 900_000;

export interface SharedTokensOptions {
  /** Reuse a token for at most this long (the AWS JDBC wrapper uses 870 s; we keep a wider margin). */
  reuseMs?: number;
  /** Never hand out a token with fewer ms of validity left than this. */
  minValidityMs?: number;
  now?: Clock;
  /** Called after each signature (metrics). */
  onSigned?: (scope: TokenScope) => void;
  sign?: (scope: TokenScope, credentials: AwsCredentialIdentity) => Promise<string>;
}

/**
 * Tokens shared per (host, port, region, user): RDS throttles new IAM logins at about 200 per second,
 * and logins that reuse a token do not count against it (PROTOCOL.md). Single flight per scope.
 */
export class SharedTokens implements TokenSource {
  private readonly cache = new Map<string, Promise<IamToken>>();
  private readonly reuseMs: number;
  private readonly minValidityMs: number;
  private readonly now: Clock;
  private readonly sign: NonNullable<SharedTokensOptions['sign']>;

  constructor(
    private readonly credentials: CredentialsHolder,
    private readonly options: SharedTokensOptions = {},
  ) {
    this.reuseMs = options.reuseMs ?? 10 * 60_000;
    this.minValidityMs = options.minValidityMs ?? 60_000;
    this.now = options.now ?? Date.now;
    this.sign = options.sign ?? signWithSdk;
  }

  async get(scope: TokenScope, notThis?: IamToken): Promise<IamToken> {
    const key = `${scope.host}\0${scope.port}\0${scope.region}\0${scope.user}`;
    const cached = this.cache.get(key);
    if (cached) {
      const token = await cached.catch(() => undefined);
      if (token && token.value !== notThis?.value && this.fresh(token)) return token;
      // Another caller replaced the entry while we waited: share their new token.
      const latest = this.cache.get(key);
      if (latest && latest !== cached) return latest;
    }
    const next = this.mint(scope);
    this.cache.set(key, next);
    next.catch(() => this.cache.get(key) === next && this.cache.delete(key));
    return next;
  }

  /** Young enough, valid long enough, and signed with the credentials in hand (not ones since replaced). */
  private fresh(token: IamToken): boolean {
    const now = this.now();
    const current = this.credentials.peek();
    return now - token.signedAt < this.reuseMs && token.expiresAt - now > this.minValidityMs && current?.accessKeyId === token.accessKeyId;
  }

  private async mint(scope: TokenScope): Promise<IamToken> {
    const creds = await this.credentials.get();
    const signedAt = this.now();
    const value = await this.sign(scope, creds);
    this.options.onSigned?.(scope);
    const credsEnd = creds.expiration ? creds.expiration.getTime() : Infinity;
    return {
      value,
      scope,
      accessKeyId: creds.accessKeyId,
      signedAt,
      expiresAt: Math.min(signedAt + TOKEN_LIFETIME_MS, credsEnd),
    };
  }
}

/** `aws rds generate-db-auth-token`, in process. The credentials are passed resolved: no second fetch. */
export async function signWithSdk(scope: TokenScope, credentials: AwsCredentialIdentity): Promise<string> {
  const { Signer } = await (signer ??= import('@aws-sdk/rds-signer'));
  return new Signer({
    hostname: scope.host,
    port: scope.port,
    region: scope.region,
    username: scope.user,
    credentials,
  }).getAuthToken();
}
