// A role assumed (sts:AssumeRole) from base credentials: --role-arn with its session name, external ID and
// MFA device. The SDK's fromTemporaryCredentials signs the call; its failure is told as the role's source.
import type { AwsCredentialIdentityProvider } from '@aws-sdk/types';
import { credentialProviders } from './chain.js';
import { messageOf, NoCredentialsError, sourceReason } from './reasons.js';
import { defaultRoleSessionName, type IdentitySpec } from './spec.js';

/** Asks a person for an MFA code; the SDK calls it with the device's serial or ARN. */
export type MfaPrompt = (serial: string) => Promise<string>;

export interface AssumeRoleOptions {
  /** The identity in people's words, for the error. */
  readonly label: string;
  /** Region for STS: the instance's signing region. */
  readonly region: string;
  readonly mfaCodeProvider: MfaPrompt;
}

/** Tries of one sts:AssumeRole call: one retry for a blip, fewer than the SDK's default three, so a client waits less. */
const STS_MAX_ATTEMPTS = 2;

/** `spec.roleArn` assumed with `base` credentials; a failure is a NoCredentialsError naming the STS call. */
export function assumeRole(
  base: AwsCredentialIdentityProvider,
  spec: IdentitySpec & { readonly roleArn: string },
  options: AssumeRoleOptions,
): AwsCredentialIdentityProvider {
  const roleArn = spec.roleArn;
  let assume: AwsCredentialIdentityProvider | undefined;
  return async (props) => {
    try {
      assume ??= (await credentialProviders()).fromTemporaryCredentials({
        masterCredentials: base,
        params: {
          RoleArn: roleArn,
          RoleSessionName: spec.roleSessionName ?? defaultRoleSessionName(),
          ...(spec.externalId ? { ExternalId: spec.externalId } : {}),
          ...(spec.mfaSerial ? { SerialNumber: spec.mfaSerial } : {}),
        },
        mfaCodeProvider: options.mfaCodeProvider,
        clientConfig: { region: options.region, maxAttempts: STS_MAX_ATTEMPTS },
      });
      return await assume(props);
    } catch (err) {
      // The base credentials' own failure already names every source tried.
      if (err instanceof NoCredentialsError) throw err;
      throw new NoCredentialsError(options.label, [{ source: `sts:AssumeRole ${roleArn}`, reason: sourceReason(messageOf(err)) }], err);
    }
  };
}
