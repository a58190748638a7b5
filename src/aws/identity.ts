// Which AWS identity signs: one credentials holder and one token cache per identity, however many
// instances sign as it. The pieces live by job under src/aws/: spec.ts (an identity as configured and its
// names), chain.ts (the SDK's default chain, source by source, with profiles.ts for the shared files and
// shell-runs.ts for how a credential_process ended), assume-role.ts, provider.ts (the two put together),
// reasons.ts (why there are no credentials, made safe to show), source-names.ts, caller.ts (who am I, the
// clock), announce.ts (what is logged at start), sso.ts; this module exports their public names too.
import type { Logger } from 'pino';
import { CredentialsHolder, type CredentialsHolderOptions } from './credentials.js';
import { credentialProvider, type ProviderOptions, type TracedProvider } from './provider.js';
import { renewalAdvice } from './source-names.js';
import { identityKey, identityLabel, type IdentitySpec } from './spec.js';
import { SharedTokens, type SharedTokensOptions } from './tokens.js';
import { WakeWatch, type WakeWatchOptions } from './wake.js';
import type { MfaPrompt } from './assume-role.js';

// What the rest of the tree takes from here, besides the holder of identities below.
export { announce } from './announce.js';
export { CLOCK_SKEW_WARN_MS, type CallerIdentity, callerIdentity, warnOfClockSkew } from './caller.js';
export type { TracedProvider } from './provider.js';
export { NoCredentialsError } from './reasons.js';
export type { IdentitySpec } from './spec.js';
export { watchSsoSession } from './sso.js';

/** An identity's credentials holder and token cache, shared by every instance that signs as it. */
export interface SignerIdentity {
  readonly spec: IdentitySpec;
  readonly label: string;
  /**
   * "#1", "#2"... in the order identities were first used (config order): how /readyz and /metrics name
   * it to whoever reaches the HTTP port, who need not learn the role ARN or profile (the log says which is which).
   */
  readonly ref: string;
  readonly holder: CredentialsHolder;
  readonly tokens: SharedTokens;
  /** Where the credentials in hand came from, once fetched. */
  source(): string | undefined;
}

export interface IdentitiesOptions {
  readonly log?: Logger | undefined;
  readonly mfa?: MfaPrompt | undefined;
  readonly holder?: Omit<CredentialsHolderOptions, 'log' | 'advice'>;
  readonly tokens?: SharedTokensOptions;
  /** Metrics: a fetch of an identity's credentials, named by its ref. */
  readonly onRefresh?: (ref: string) => void;
  /** The seam tests use to swap the SDK; the real chain by default. */
  readonly providerFor?: (spec: IdentitySpec, options: ProviderOptions) => TracedProvider;
  /** How a sleep is noticed (tests: a fake clock); with a log, the watch runs. */
  readonly wake?: WakeWatchOptions;
}

/** One holder per identity: a hundred instances on one profile still fetch its credentials once. */
export class Identities {
  private readonly byKey = new Map<string, SignerIdentity>();
  private readonly wake: WakeWatch | undefined;

  constructor(private readonly options: IdentitiesOptions = {}) {
    const log = options.log;
    // A long-running proxy (serve, run: they log) renews at once on waking from a sleep.
    if (log) {
      this.wake = new WakeWatch((slept) => {
        log.info(
          { sleptSeconds: Math.round(slept / 1000) },
          `woke up: this machine slept about ${Math.max(1, Math.round(slept / 60_000))} min (a timer fired that late): renewing AWS credentials now`,
        );
        for (const identity of this.byKey.values()) identity.holder.renew();
      }, options.wake);
    }
  }

  for(spec: IdentitySpec, region: string): SignerIdentity {
    const key = identityKey(spec);
    const known = this.byKey.get(key);
    if (known) return known;
    const label = identityLabel(spec);
    const ref = `#${this.byKey.size + 1}`;
    const log = this.options.log?.child({ identity: label });
    const traced = (this.options.providerFor ?? credentialProvider)(spec, { region, mfa: this.options.mfa, log });
    const holder = new CredentialsHolder(traced.provider, {
      ...this.options.holder,
      log,
      advice: () => renewalAdvice(traced.source() ?? '', spec),
      source: () => traced.source() ?? label,
      onRefresh: (creds) => {
        this.options.holder?.onRefresh?.(creds);
        this.options.onRefresh?.(ref);
      },
    });
    const identity: SignerIdentity = {
      spec,
      label,
      ref,
      holder,
      tokens: new SharedTokens(holder, { ...this.options.tokens, label }),
      source: traced.source,
    };
    this.byKey.set(key, identity);
    return identity;
  }

  all(): readonly SignerIdentity[] {
    return [...this.byKey.values()];
  }

  /** Stop every background refresh. */
  close(): void {
    this.wake?.close();
    for (const identity of this.byKey.values()) identity.holder.close();
  }
}
