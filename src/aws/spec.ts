// An AWS identity as configured, and how people and the proxy's tables name it.
import { hostname } from 'node:os';

/** An AWS identity as configured: `--profile`, `--role-arn` and the role's settings. */
export interface IdentitySpec {
  readonly profile?: string | undefined;
  readonly roleArn?: string | undefined;
  readonly roleSessionName?: string | undefined;
  readonly externalId?: string | undefined;
  /** The MFA device the role's trust policy demands (a profile names its own with mfa_serial). */
  readonly mfaSerial?: string | undefined;
}

/** How people name an identity in logs and errors. */
export function identityLabel(spec: IdentitySpec): string {
  const base = spec.profile ? `profile ${spec.profile}` : 'the default credential chain';
  return spec.roleArn ? `role ${spec.roleArn} assumed from ${base}` : base;
}

/** Two instances with the same identity share one credentials holder and one token cache. */
export const identityKey = (spec: IdentitySpec): string =>
  JSON.stringify([spec.profile, spec.roleArn, spec.roleSessionName, spec.externalId, spec.mfaSerial].map((v) => v ?? null));

/** STS takes a role session name of 2 to 64 characters of [\w+=,.@-]. */
const ROLE_SESSION_NAME_MAX = 64;

/** CloudTrail shows this for the assumed role's sessions; [\w+=,.@-]{2,64} as STS demands. */
export function defaultRoleSessionName(host = hostname()): string {
  return `pg-iam-proxy@${host}`.replace(/[^\w+=,.@-]/g, '-').slice(0, ROLE_SESSION_NAME_MAX);
}
