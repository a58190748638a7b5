// Who am I: whose credentials these are (sts:GetCallerIdentity), and this machine's clock against AWS's.
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import type { Logger } from 'pino';

/** Who the credentials belong to (sts:GetCallerIdentity) and the server's clock (its HTTP Date). */
export interface CallerIdentity {
  readonly arn: string;
  readonly account: string;
  readonly serverDate: Date | undefined;
}

/** STS answers at once or not at all: the caller's identity is worth a few seconds at start, no more. */
const CALLER_IDENTITY_TIMEOUT_MS = 5_000;

export async function callerIdentity(
  credentials: AwsCredentialIdentity,
  region: string,
  timeoutMs = CALLER_IDENTITY_TIMEOUT_MS,
): Promise<CallerIdentity> {
  const { GetCallerIdentityCommand, STSClient } = await import('@aws-sdk/client-sts');
  const client = new STSClient({ region, credentials, maxAttempts: 1 });
  let serverDate: Date | undefined;
  client.middlewareStack.add(
    (next) => async (args) => {
      const out = await next(args);
      const date = (out.response as { headers?: Record<string, string> }).headers?.date;
      if (date) serverDate = new Date(date);
      return out;
    },
    { step: 'deserialize', name: 'pgIamProxyServerDate' },
  );
  try {
    const out = await client.send(new GetCallerIdentityCommand({}), { abortSignal: AbortSignal.timeout(timeoutMs) });
    return { arn: out.Arn ?? 'unknown', account: out.Account ?? 'unknown', serverDate };
  } finally {
    client.destroy();
  }
}

/** More than this between this machine's clock and AWS's, and tokens may be refused. */
export const CLOCK_SKEW_WARN_MS = 60_000;

/** The clock against STS's Date header (as doctor checks it): a warning past a minute. */
export function warnOfClockSkew(serverDate: Date | undefined, log: Logger, now = Date.now()): void {
  if (!serverDate) return;
  const skew = now - serverDate.getTime();
  if (Math.abs(skew) <= CLOCK_SKEW_WARN_MS) return;
  log.warn(
    { skewSeconds: Math.round(skew / 1000) },
    `this machine's clock is ${Math.round(Math.abs(skew) / 1000)} s ${skew > 0 ? 'ahead of' : 'behind'} AWS's: RDS may refuse tokens signed with it (fix the system clock: NTP)`,
  );
}
