// What only AWS knows to say when a login fails: the RDS CA bundle, the rds_iam checklist, the endpoint
// names tokens are signed for. The proxy's errors and doctor's fixes take their words from here.
import type { ConnectHints } from '../cloud.js';
import { SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { quoteIdent } from '../sql-quote.js';
import type { CaSource } from './ca.js';

/** AWS's bundle of every commercial region's RDS CAs. */
export const GLOBAL_BUNDLE_URL = 'https://truststore.pem.s3.amazonaws.com/global-bundle.pem';

/** The CA advice for a certificate no trusted CA vouches for. */
export function untrustedCaHint(source: CaSource): string {
  return source.kind === 'bundled'
    ? `The bundled RDS CAs lack regions launched after mid-2022, GovCloud and China. Download AWS's global bundle (${GLOBAL_BUNDLE_URL}) and pass --ca-file global-bundle.pem.`
    : `No CA in ${source.path} signed this certificate. AWS's global-bundle.pem (${GLOBAL_BUNDLE_URL}) covers every commercial region.`;
}

/** The names a token (and a certificate) is for. */
export const ENDPOINT_NAMES = 'the exact RDS endpoint name (instance, cluster, reader or RDS Proxy endpoint)';

/** The advice attached to the engine's TLS errors for an RDS instance. */
export function rdsConnectHints(source: CaSource): ConnectHints {
  return {
    untrusted: untrustedCaHint(source),
    nameMismatch: `Use ${ENDPOINT_NAMES}, not an IP address, CNAME or custom domain: tokens are signed for it and its certificate carries it. To dial an address or a tunnel, keep the endpoint name and add --connect-to HOST:PORT.`,
    noTls:
      'IAM authentication requires TLS and pg-iam-proxy never falls back to plaintext: RDS always offers TLS, so check that --connect-to points at the database.',
  };
}

/** The grant that makes a role an IAM user. */
export const grantRdsIam = (user: string): string => `GRANT rds_iam TO ${quoteIdent(user)};`;

/** Why RDS refuses a well-formed token, most likely first (the seed troubleshooting page's causes, in order). */
export function rejectionChecklist(scope: { host: string; region: string; user: string }): string {
  const quoted = quoteIdent(scope.user);
  return [
    `Check, most likely first: 1) the user is granted rds_iam (${grantRdsIam(scope.user)}).`,
    `2) The signing identity may rds-db:connect to arn:aws:rds-db:${scope.region}:<account-id>:dbuser:<DbiResourceId or cluster-resource-id>/${scope.user} (AmazonRDSFullAccess does not grant it).`,
    '3) IAM database authentication is enabled on the instance or cluster.',
    `4) ${scope.host} is the exact instance, cluster, reader or RDS Proxy endpoint (never an IP, CNAME or custom endpoint).`,
    '5) The signing identity is the one you expect (`aws sts get-caller-identity`).',
    "6) This machine's clock is right (tokens are valid for 15 minutes from signing).",
    `7) The user name's case matches the database role exactly (${quoted}).`,
  ].join(' ');
}

/** The server asked `user` for a password of another kind (`method`): the role is not an IAM user. */
export function notIamUser(user: string, method: string): WireError {
  const quoted = quoteIdent(user);
  return new WireError(
    SqlState.InvalidAuthorization,
    `user ${quoted} is not set up for IAM authentication: the server asked for ${method} authentication`,
    {
      reason: Failure.NotIamUser,
      detail:
        'An RDS user granted rds_iam is asked for a cleartext password, which pg-iam-proxy answers with an IAM token. Any other request means the user logs in with a password, which the proxy does not relay.',
      hint: `As the master user: ${grantRdsIam(user)} (CREATE USER ${quoted} first if it does not exist), and make sure IAM database authentication is enabled on the instance.`,
    },
  );
}

/**
 * The same causes as rejectionChecklist, for doctor: one numbered line each, with the commands that check
 * them and, when STS said who signs (`who`), the identity and the exact resource ARN for its account.
 */
export function rejectionFixes(
  scope: { host: string; region: string; user: string },
  who: { arn: string; account: string } | undefined,
): string {
  const { host, region, user } = scope;
  const arn = `arn:aws:rds-db:${region}:${who?.account ?? 'ACCOUNT'}:dbuser:DBI-RESOURCE-ID/${user}`;
  return [
    `1. The DB user must be in rds_iam: GRANT rds_iam TO "${user}"; (as the master user).`,
    `2. The signing identity${who ? ` (${who.arn})` : ''} needs rds-db:connect on ${arn}; find the resource ID with: aws rds describe-db-instances --query "DBInstances[?Endpoint.Address=='${host}'].DbiResourceId" (clusters: describe-db-clusters, DbClusterResourceId). AmazonRDSFullAccess does not grant it.`,
    '3. IAM database authentication must be enabled on the instance or cluster (aws rds modify-db-instance --enable-iam-database-authentication --apply-immediately).',
    `4. The user name is case-sensitive: "${user}" must match the role exactly.`,
  ].join('\n');
}
