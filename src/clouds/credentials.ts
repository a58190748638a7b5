// The access tokens of the clouds that log in with one (their table entries have a `bearer`): one holder
// per cloud per process, made when an instance of that cloud first wants one, so that a hundred Azure
// instances still fetch one token, and a proxy without them loads none of the SDKs. The seam tests use to
// swap the SDKs.
import type { Logger } from 'pino';
import type { ConnectSettingsFetch } from '../gcp/connector.js';
import { adminApi } from '../gcp/connector.js';
import type { BearerSource } from '../oauth/bearer-cloud.js';
import { type BearerFetch, BearerTokens, type BearerTokensOptions } from '../oauth/tokens.js';
import { type BearerCloudName, CLOUD_TABLE } from './table.js';

/** A cloud whose password is an access token (Azure, Cloud SQL). */
type OAuthCloud = BearerCloudName;

export interface CloudCredentialsOptions {
  readonly log?: Logger | undefined;
  /** Metrics: a token fetched, by cloud. */
  readonly onRefresh?: (cloud: OAuthCloud) => void;
  /** Holder settings (tests: a short refresh-ahead, a clock). */
  readonly holder?: Omit<BearerTokensOptions, 'label' | 'log' | 'onRefresh'>;
  /** Swap the SDKs (tests); the real ones by default. */
  readonly fetchFor?: (cloud: OAuthCloud) => BearerFetch;
  readonly connectSettings?: ConnectSettingsFetch;
}

export class CloudCredentials {
  private readonly holders = new Map<OAuthCloud, BearerTokens>();
  /** Each cloud's SDK source, made on first use: its tokens and the account they stand for share it. */
  private readonly sources = new Map<OAuthCloud, BearerSource>();
  private settings: ConnectSettingsFetch | undefined;

  constructor(private readonly options: CloudCredentialsOptions = {}) {}

  private source(cloud: OAuthCloud): BearerSource {
    let source = this.sources.get(cloud);
    if (!source) {
      source = CLOUD_TABLE[cloud].bearer.source();
      this.sources.set(cloud, source);
    }
    return source;
  }

  /** The cloud's token holder, made on first use. */
  tokens(cloud: OAuthCloud): BearerTokens {
    let holder = this.holders.get(cloud);
    if (!holder) {
      const { label } = CLOUD_TABLE[cloud].bearer;
      const fetch = this.options.fetchFor?.(cloud) ?? this.source(cloud).fetch;
      holder = new BearerTokens(fetch, {
        ...this.options.holder,
        label,
        log: this.options.log?.child({ identity: label }),
        onRefresh: () => this.options.onRefresh?.(cloud),
      });
      this.holders.set(cloud, holder);
    }
    return holder;
  }

  /** Cloud SQL's connect.get, shared by its instances. */
  connectSettings(): ConnectSettingsFetch {
    return (this.settings ??= this.options.connectSettings ?? adminApi());
  }

  /** The account the cloud's credentials stand for, when they say; never from a swapped SDK. */
  async account(cloud: OAuthCloud): Promise<string | undefined> {
    if (this.options.fetchFor) return undefined;
    return this.source(cloud).account?.();
  }

  /** The holders in use, by cloud (readiness). */
  all(): ReadonlyArray<[OAuthCloud, BearerTokens]> {
    return [...this.holders];
  }

  /**
   * Fetch the cloud's token now, so the first client does not wait, and say whose it is (or why none came);
   * resolves to whether one came.
   */
  async announce(cloud: OAuthCloud, log: Logger): Promise<boolean> {
    const holder = this.tokens(cloud);
    try {
      const token = await holder.get();
      log.info({ signer: token.signer, expiresAt: new Date(token.expiresAt).toISOString() }, `access tokens from ${holder.label}`);
      return true;
    } catch {
      // The holder logged why.
      return false;
    }
  }

  close(): void {
    for (const holder of this.holders.values()) holder.close();
  }
}
