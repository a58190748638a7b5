// The access tokens of the clouds that log in with OAuth (Azure, Cloud SQL): one holder per cloud per
// process, made when an instance of that cloud first wants one, so that a hundred Azure instances still
// fetch one token, and a proxy without them loads none of the SDKs. The seam tests use to swap the SDKs.
import type { Logger } from 'pino';
import { AZURE_LABEL, azureFetch } from '../azure/entra.js';
import { adminApi, type ConnectSettingsFetch } from '../gcp/connector.js';
import { GOOGLE_LABEL, googleAuth, googleFetch, LOGIN_SCOPE } from '../gcp/iam.js';
import { type BearerFetch, BearerTokens, type BearerTokensOptions } from './tokens.js';

export type OAuthCloud = 'azure' | 'gcp';

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

const LABELS: Readonly<Record<OAuthCloud, string>> = { azure: AZURE_LABEL, gcp: GOOGLE_LABEL };

export class CloudCredentials {
  private readonly holders = new Map<OAuthCloud, BearerTokens>();
  private settings: ConnectSettingsFetch | undefined;
  /** Application Default Credentials for logins: the tokens' and the principal's. */
  private readonly googleLogin = googleAuth(LOGIN_SCOPE);

  constructor(private readonly options: CloudCredentialsOptions = {}) {}

  /** The cloud's token holder, made on first use. */
  tokens(cloud: OAuthCloud): BearerTokens {
    let holder = this.holders.get(cloud);
    if (!holder) {
      const fetch = this.options.fetchFor?.(cloud) ?? (cloud === 'azure' ? azureFetch() : googleFetch(LOGIN_SCOPE, this.googleLogin));
      holder = new BearerTokens(fetch, {
        ...this.options.holder,
        label: LABELS[cloud],
        log: this.options.log?.child({ identity: LABELS[cloud] }),
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

  /**
   * Google: the email of the account Application Default Credentials stand for (a service account key,
   * the metadata server's account); undefined when they do not say (a person's gcloud login).
   */
  async googleAccount(): Promise<string | undefined> {
    if (this.options.fetchFor) return undefined;
    try {
      return (await (await this.googleLogin()).getCredentials()).client_email ?? undefined;
    } catch {
      return undefined;
    }
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
