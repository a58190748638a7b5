// At start: who signs, from where, until when, and whether renewing will need the user.
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import type { Logger } from 'pino';
import { redactSecrets } from '../log.js';
import { callerIdentity, warnOfClockSkew } from './caller.js';
import type { SignerIdentity } from './identity.js';
import { NoCredentialsError } from './reasons.js';
import { renewalAdvice, sourceOf } from './source-names.js';
import { watchSsoSession } from './sso.js';

/**
 * Fetch an identity's credentials and log who signs (the ARN when STS answers, else the source) and until
 * when, with a warning when renewal will need the user. Failures are logged, not fatal: credentials may
 * come later and clients are told until then.
 */
export async function announce(identity: SignerIdentity, region: string, log: Logger): Promise<boolean> {
  let creds: AwsCredentialIdentity;
  try {
    creds = await identity.holder.get();
  } catch (err) {
    const tried = err instanceof NoCredentialsError ? err.describeTried() : undefined;
    log.warn(
      { err, identity: identity.label, ...(tried ? { tried } : {}) },
      'no AWS credentials yet: clients are told so until they can be had',
    );
    return false;
  }
  const source = identity.source() ?? sourceOf(creds) ?? 'static credentials';
  const fields = {
    identity: identity.label,
    source,
    accessKeyId: creds.accessKeyId,
    ...(creds.expiration ? { expiration: creds.expiration.toISOString() } : {}),
  };
  try {
    const who = await callerIdentity(creds, region);
    log.info({ ...fields, arn: who.arn, account: who.account }, 'AWS identity ready');
    warnOfClockSkew(who.serverDate, log);
  } catch (err) {
    log.info(
      { ...fields, stsError: redactSecrets((err as Error).message) },
      'AWS credentials ready (sts:GetCallerIdentity did not answer)',
    );
  }
  if (source.includes('SSO')) watchSsoSession(identity.spec.profile, log);
  const advice = renewalAdvice(source, identity.spec);
  if (advice && creds.expiration) {
    log.warn(
      { identity: identity.label, expiration: creds.expiration.toISOString(), advice },
      `AWS credentials from ${source} need you to renew them: ${advice}`,
    );
  }
  return true;
}
