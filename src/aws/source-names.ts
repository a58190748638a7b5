// Where credentials came from, in people's words, and what renewing them will ask of the user.
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import type { IdentitySpec } from './spec.js';

/** The SDK marks credentials with the feature that produced them (`$source`); these are their names. */
const SOURCE_NAMES: ReadonlyArray<readonly [feature: string, name: string]> = [
  ['CREDENTIALS_PROFILE_SOURCE_PROFILE', 'a role profile (role_arn with source_profile)'],
  ['CREDENTIALS_PROFILE_NAMED_PROVIDER', 'a role profile (role_arn with credential_source)'],
  ['CREDENTIALS_PROFILE_SSO', 'AWS IAM Identity Center (SSO)'],
  ['CREDENTIALS_SSO', 'AWS IAM Identity Center (SSO)'],
  ['CREDENTIALS_PROFILE_SSO_LEGACY', 'AWS IAM Identity Center (SSO)'],
  ['CREDENTIALS_SSO_LEGACY', 'AWS IAM Identity Center (SSO)'],
  ['CREDENTIALS_PROFILE_LOGIN', 'an `aws login` session'],
  ['CREDENTIALS_LOGIN', 'an `aws login` session'],
  ['CREDENTIALS_PROFILE_STS_WEB_ID_TOKEN', 'a web identity token (profile web_identity_token_file)'],
  ['CREDENTIALS_ENV_VARS_STS_WEB_ID_TOKEN', 'a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE)'],
  ['CREDENTIALS_STS_ASSUME_ROLE_WEB_ID', 'a web identity token'],
  ['CREDENTIALS_PROFILE_PROCESS', 'credential_process'],
  ['CREDENTIALS_PROCESS', 'credential_process'],
  ['CREDENTIALS_STS_ASSUME_ROLE', 'an assumed role'],
  ['CREDENTIALS_HTTP', 'the container credentials endpoint (ECS, EKS Pod Identity)'],
  ['CREDENTIALS_IMDS', 'EC2 instance metadata (IMDSv2)'],
  ['CREDENTIALS_ENV_VARS', 'environment variables (AWS_ACCESS_KEY_ID)'],
  ['CREDENTIALS_PROFILE', 'the shared credentials file'],
];

/** The most specific source the SDK recorded on these credentials (not every provider records one). */
export function sourceOf(creds: AwsCredentialIdentity): string | undefined {
  const features = (creds as { $source?: Record<string, string> }).$source ?? {};
  return SOURCE_NAMES.find(([feature]) => feature in features)?.[1];
}

/** Sources whose credentials end when a person's session ends: the proxy cannot renew them alone. */
export function renewalAdvice(source: string, spec: IdentitySpec): string | undefined {
  const profile = spec.profile ? ` --profile ${spec.profile}` : '';
  if (source.includes('SSO')) return `when the SSO session ends, run \`aws sso login${profile}\``;
  if (source.includes('aws login')) return `when the session ends, run \`aws login${profile}\``;
  if (source.includes('MFA code')) return 'each renewal asks for a new MFA code on the terminal';
  return undefined;
}
