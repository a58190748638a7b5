import type { AwsCredentialIdentity } from '@aws-sdk/types';
import type { Token } from '../cloud.js';
import { type Clock, MIN_VALIDITY_MS } from '../renewing.js';
import type { CredentialsHolder } from './credentials.js';

// The RDS signer loads on first use: start-up to listening stays short.
let signer: Promise<typeof import('@aws-sdk/rds-signer')> | undefined;

/** What a token is signed for: the exact endpoint name and port, the region, the DB user. */
export interface TokenScope {
  readonly host: string;
  readonly port: number;
  readonly region: string;
  readonly user: string;
}

/** An RDS IAM token: the password the engine sends, with what it was signed for and by which key. */
export interface IamToken extends Token {
  readonly scope: TokenScope;
  readonly accessKeyId: string;
  readonly signer: { readonly accessKeyId: string; readonly identity?: string };
  /** When the server stops accepting it: 15 minutes after signing, or the credentials' expiry. */
  readonly expiresAt: number;
}

/** The seam the session uses: tests swap it, the engine shares one per identity. */
export interface TokenSource {
  /** Who signs, in people's words ("profile app"), for errors that must name the identity. */
  readonly label?: string | undefined;
  /** A token for `scope`, reused while fresh. `notThis`: a token the server just rejected. */
  get(scope: TokenScope, notThis?: IamToken): Promise<IamToken>;
}

/** One cache and rejection key per scope. */
export const scopeKey = (scope: TokenScope): string => `${scope.host}\0${scope.port}\0${scope.region}\0${scope.user}`;

/** Static credentials are dropped after a rejected token at most this often. */
const INVALIDATE_EVERY_MS = 60_000;

/** Defaults of SharedTokensOptions (what each is for is said there). */
const DEFAULT_REUSE_MS = 10 * 60_000;
const DEFAULT_MAX_ENTRIES = 1_000;

/** RDS accepts a token for 900 s after X-Amz-Date. */
export const TOKEN_LIFETIME_MS = 900_000;

export interface SharedTokensOptions {
  /** Reuse a token for at most this long (the AWS JDBC wrapper uses 870 s; we keep a wider margin). */
  reuseMs?: number;
  /** Never hand out a token with fewer ms of validity left than this. */
  minValidityMs?: number;
  now?: Clock;
  /** The identity's name for people (TokenSource.label). */
  label?: string | undefined;
  /** Called after each signature (tests count them). */
  onSigned?: (scope: TokenScope) => void;
  /** Most scopes cached at once: a client chooses the user name, so the cache must stay bounded. */
  maxEntries?: number;
  sign?: (scope: TokenScope, credentials: AwsCredentialIdentity) => Promise<string>;
}

/** The tokens already signed, by the cache entry that promised them (eviction reads their age). */
const settled = new WeakMap<Promise<IamToken>, IamToken>();

/**
 * Tokens shared per (host, port, region, user): RDS throttles new IAM logins at about 200 per second,
 * and logins that reuse a token do not count against it (docs/protocol.md). Single flight per scope.
 */
export class SharedTokens implements TokenSource {
  private readonly cache = new Map<string, Promise<IamToken>>();
  private readonly reuseMs: number;
  private readonly minValidityMs: number;
  private readonly now: Clock;
  private readonly sign: NonNullable<SharedTokensOptions['sign']>;
  private readonly maxEntries: number;
  readonly label: string | undefined;
  /** When static credentials were last dropped after a rejection. */
  private invalidatedAt = -Infinity;

  constructor(
    private readonly credentials: CredentialsHolder,
    private readonly options: SharedTokensOptions = {},
  ) {
    this.reuseMs = options.reuseMs ?? DEFAULT_REUSE_MS;
    this.minValidityMs = options.minValidityMs ?? MIN_VALIDITY_MS;
    this.now = options.now ?? Date.now;
    this.sign = options.sign ?? signWithSdk;
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.label = options.label;
  }

  async get(scope: TokenScope, notThis?: IamToken): Promise<IamToken> {
    const key = scopeKey(scope);
    // Static keys (no expiry) may have been rotated in the shared files since they were read: a rejected
    // token makes the holder read them again, at most once a minute (a client naming users that do not
    // exist must not make every login re-read the files or rerun credential_process). Expiring
    // credentials are renewed on their own schedule.
    if (notThis && this.now() - this.invalidatedAt >= INVALIDATE_EVERY_MS) {
      this.invalidatedAt = this.now();
      this.credentials.invalidate(notThis.accessKeyId);
    }
    const cached = this.cache.get(key);
    if (cached) {
      const token = await cached.catch(() => undefined);
      if (token && token.value !== notThis?.value && this.fresh(token)) return token;
      // Another caller replaced the entry while we waited: share their new token.
      const latest = this.cache.get(key);
      if (latest && latest !== cached) return latest;
    }
    const next = this.mint(scope);
    next.then(
      (token) => settled.set(next, token),
      () => undefined,
    );
    this.cache.delete(key);
    this.cache.set(key, next);
    if (this.cache.size > this.maxEntries) this.evict();
    next.catch(() => this.cache.get(key) === next && this.cache.delete(key));
    return next;
  }

  /**
   * Over the bound: drop the tokens no longer worth reusing, then, if still over, the least recently
   * signed (the map keeps insertion order, and a new token is inserted last).
   */
  private evict(): void {
    const now = this.now();
    for (const [key, entry] of this.cache) {
      if (this.cache.size <= this.maxEntries) return;
      const token = settled.get(entry);
      if (token && (now - token.signedAt >= this.reuseMs || token.expiresAt - now <= this.minValidityMs)) this.cache.delete(key);
    }
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
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
      // Who signed, for the session's log line: the key, and the identity's name when it has one.
      signer: this.label ? { accessKeyId: creds.accessKeyId, identity: this.label } : { accessKeyId: creds.accessKeyId },
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
