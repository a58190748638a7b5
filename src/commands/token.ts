// `pg-iam-proxy token`: one token, as `aws rds generate-db-auth-token` (or `az account get-access-token
// --resource-type oss-rdbms`, `gcloud sql generate-login-token`) prints it.
import type { Identities } from '../aws/identity.js';
import type { CloudCredentials } from '../clouds/credentials.js';
import { cloudOf } from '../clouds/table.js';
import type { InstanceConfig } from '../config.js';

/**
 * A token for the instance and `user`, as its cloud makes it for a login (AWS: signed for the endpoint
 * with the user's identity; Azure, Cloud SQL: the cloud's access token, the same for every user, after the
 * checks made before a login).
 */
export async function signToken(instance: InstanceConfig, user: string, identities: Identities, clouds: CloudCredentials): Promise<string> {
  return cloudOf(instance.cloud).token({ identities, clouds }, instance, user);
}
