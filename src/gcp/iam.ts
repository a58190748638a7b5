// Cloud SQL IAM database authentication: the password is an OAuth2 access token for the scope below, from
// google-auth-library's Application Default Credentials (a service account key, workload identity
// federation, the metadata server on GCE, GKE and Cloud Run, `gcloud auth application-default login`).
// User names are service accounts without `.gserviceaccount.com` and users' emails. The library loads on
// the first fetch: an AWS-only proxy never loads it. What Cloud SQL says when a login fails is here too.
import { quoteIdent } from '../sql-quote.js';
import type { CloudSqlInstance } from './instance.js';
import { SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import type { TokenErrorWording } from '../oauth/authenticator.js';
import type { BearerSource } from '../oauth/bearer-cloud.js';
import type { BearerFetch, BearerToken } from '../oauth/tokens.js';

/** The scope of tokens that log in to Cloud SQL, and the one the SQL Admin API wants (Google's connectors ask for it). */
export const LOGIN_SCOPE = 'https://www.googleapis.com/auth/sqlservice.login';
export const ADMIN_SCOPE = 'https://www.googleapis.com/auth/sqlservice.admin';

/** Who the tokens come from, in people's words. */
export const GOOGLE_LABEL = 'Application Default Credentials';

/** What every service account's email ends with, and a Cloud SQL user name must not. */
export const SERVICE_ACCOUNT_SUFFIX = '.gserviceaccount.com';

/** How long Google's access tokens live unless they say otherwise: an hour. */
const GOOGLE_TOKEN_LIFETIME_MS = 60 * 60_000;

let library: Promise<typeof import('google-auth-library')> | undefined;

/**
 * A URL on this machine. gaxios sends every request through HTTPS_PROXY/HTTP_PROXY unless NO_PROXY names
 * it; a loopback --sqladmin-api-endpoint (plain HTTP is allowed there only) would carry its Bearer token
 * to the proxy host in plaintext. Requests the credentials make themselves go to loopback directly too.
 */
const LOOPBACK_URL = /^https?:\/\/(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?(\/|$)/i;

/** Application Default Credentials for one scope, made on first use. */
export function googleAuth(scope: string): () => Promise<import('google-auth-library').GoogleAuth> {
  let auth: import('google-auth-library').GoogleAuth | undefined;
  return async () => {
    if (!auth) {
      const { GoogleAuth } = await (library ??= import('google-auth-library'));
      auth = new GoogleAuth({ scopes: [scope], clientOptions: { transporterOptions: { noProxy: [LOOPBACK_URL] } } });
    }
    return auth;
  };
}

/** Tokens for `scope` from Application Default Credentials; the library caches them and renews 5 minutes ahead. */
export function googleFetch(scope: string, auth = googleAuth(scope)): BearerFetch {
  return async () => {
    const client = await (await auth()).getClient();
    const { token } = await client.getAccessToken();
    if (!token) throw new Error('Application Default Credentials returned no access token');
    // The library records the end of the token it hands out; when it does not, the lifetime Google issues.
    const expiresAt = client.credentials.expiry_date ?? Date.now() + GOOGLE_TOKEN_LIFETIME_MS;
    return { value: token, expiresAt, signer: { identity: GOOGLE_LABEL } };
  };
}

/**
 * Application Default Credentials for logins, one per process: the tokens, and the account they stand for
 * (a service account key, the metadata server's account); no account when they do not say (a person's
 * gcloud login).
 */
export function googleSource(): BearerSource {
  const login = googleAuth(LOGIN_SCOPE);
  return {
    fetch: googleFetch(LOGIN_SCOPE, login),
    async account() {
      try {
        return (await (await login()).getCredentials()).client_email ?? undefined;
      } catch {
        return undefined;
      }
    },
  };
}

/** The causes of a refused token, most likely first. */
export function cloudSqlChecklist(user: string, instance: CloudSqlInstance | undefined): string {
  const name = instance?.instance ?? 'INSTANCE';
  const project = instance?.project ?? 'PROJECT';
  const type = user.includes('.iam') ? 'cloud_iam_service_account' : 'cloud_iam_user';
  return [
    `Check, most likely first: 1) IAM database authentication is on: gcloud sql instances patch ${name} --database-flags=cloudsql.iam_authentication=on (keep the instance's other flags in the list).`,
    `2) The user exists as an IAM user, not a built-in one: gcloud sql users create ${user} --instance=${name} --type=${type} (gcloud sql users list --instance=${name} shows each user's type).`,
    `3) The user name: a service account without ${SERVICE_ACCOUNT_SUFFIX} (NAME@${project}.iam), a person by the full email.`,
    `4) The principal has roles/cloudsql.instanceUser (and roles/cloudsql.client) on project ${project}: gcloud projects add-iam-policy-binding ${project} --member=serviceAccount:EMAIL --role=roles/cloudsql.instanceUser.`,
    `5) The credentials are the principal's whose user this is (gcloud auth application-default print-access-token; on GCE, GKE or Cloud Run the attached service account), and the token has the ${LOGIN_SCOPE} scope.`,
  ].join(' ');
}

/** Cloud SQL's words for a token that cannot be had or is refused; `instance` names it in the advice. */
export function cloudSqlWording(instance: CloudSqlInstance | undefined): TokenErrorWording {
  return {
    tokenName: 'a Google OAuth2 access token',
    tryCommand: 'gcloud auth application-default print-access-token',
    rejection(user: string, token: BearerToken, label: string) {
      return {
        detail: `pg-iam-proxy sent an access token from ${label} (scope ${LOGIN_SCOPE}), valid until ${new Date(token.expiresAt).toISOString()}, as user ${quoteIdent(user)}${instance ? ` to ${instance.connectionName}` : ''}.`,
        hint: cloudSqlChecklist(user, instance),
      };
    },
    notTokenUser(user: string, method: string) {
      const quoted = quoteIdent(user);
      return new WireError(
        SqlState.InvalidAuthorization,
        `user ${quoted} is not set up for IAM database authentication: the server asked for ${method} authentication`,
        {
          reason: Failure.NotIamUser,
          detail:
            'An IAM user is asked for a cleartext password, which pg-iam-proxy answers with an access token. Any other request means a built-in user (or cloudsql.iam_authentication off), whose password the proxy does not relay.',
          hint: cloudSqlChecklist(user, instance),
        },
      );
    },
    refuseUser(user: string) {
      if (!user.endsWith(SERVICE_ACCOUNT_SUFFIX)) return undefined;
      const short = user.slice(0, -SERVICE_ACCOUNT_SUFFIX.length);
      return new WireError(
        SqlState.InvalidAuthorization,
        `Cloud SQL IAM user names leave off ${SERVICE_ACCOUNT_SUFFIX}: log in as "${short}"`,
        {
          reason: Failure.BadUserName,
          detail: `A service account's database user is its email without ${SERVICE_ACCOUNT_SUFFIX}; the name "${user}" is never accepted (nothing was sent to the server).`,
          hint: `Use user=${short} (or --db-user ${short}).`,
        },
      );
    },
  };
}
