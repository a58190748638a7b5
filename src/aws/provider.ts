// The credentials of one configured identity: the default chain (src/aws/chain.ts), for a profile or not,
// and a role assumed from it (src/aws/assume-role.ts), remembering where the last credentials came from.
import type { AwsCredentialIdentityProvider } from '@aws-sdk/types';
import type { Logger } from 'pino';
import { assumeRole, type MfaPrompt } from './assume-role.js';
import { defaultChain } from './chain.js';
import { identityLabel, type IdentitySpec } from './spec.js';

export interface ProviderOptions {
  /** Region for STS (assume role); the instance's signing region. */
  readonly region: string;
  readonly mfa?: MfaPrompt | undefined;
  readonly log?: Logger | undefined;
}

export interface TracedProvider {
  readonly provider: AwsCredentialIdentityProvider;
  /** The base source of the last credentials fetched (for a role: what it was assumed from). */
  source(): string | undefined;
}

/** Without a terminal to ask on, a source that needs an MFA code fails with this, and the chain stops there. */
const noTerminal: MfaPrompt = async (serial) => {
  throw new Error(
    `an MFA code is needed for ${serial}, but there is no terminal to ask on; run the proxy in a terminal, or use credentials that need no MFA code`,
  );
};

/** The SDK's sources for an identity, wrapped so failures say what was tried and successes say from where. */
export function credentialProvider(spec: IdentitySpec, options: ProviderOptions): TracedProvider {
  const label = identityLabel(spec);
  let mfaUsed = false;
  const mfaCodeProvider: MfaPrompt = (serial) => {
    mfaUsed = true;
    return (options.mfa ?? noTerminal)(serial);
  };
  const withMfa = (source: string) => (mfaUsed ? `${source} with an MFA code` : source);
  const chain = defaultChain(
    {
      ...(spec.profile ? { profile: spec.profile } : {}),
      mfaCodeProvider,
      // Read the shared config and credentials files again on every fetch (the SDK caches them for the
      // life of the process): the holder fetches rarely, and a fetch after invalidate() must see a key
      // rotated in the file since.
      ignoreCache: true,
    },
    { label, log: options.log },
  );
  let baseSource: string | undefined;
  const base: AwsCredentialIdentityProvider = async (props) => {
    const { credentials, source } = await chain(props);
    baseSource = source;
    return credentials;
  };
  if (!spec.roleArn) return { provider: base, source: () => baseSource && withMfa(baseSource) };
  const roleArn = spec.roleArn;
  const provider = assumeRole(base, { ...spec, roleArn }, { label, region: options.region, mfaCodeProvider });
  return { provider, source: () => (baseSource ? withMfa(`${roleArn} assumed from ${baseSource}`) : undefined) };
}
