// `pg-iam-proxy token`: one token, as `aws rds generate-db-auth-token` (or `az account get-access-token
// --resource-type oss-rdbms`, `gcloud sql generate-login-token`) prints it.
import type { Identities } from '../aws/identity.js';
import type { InstanceConfig } from '../config.js';
import type { CloudCredentials } from '../oauth/sources.js';
import { cloudSqlWords } from '../gcp/iam.js';
import { tokensOf } from './wiring.js';

/**
 * A token for the instance and `user`. AWS: signed for the endpoint with the user's identity (`users:`) or
 * the instance's. Azure, Cloud SQL: the cloud's access token (the same for every user), after the checks
 * the proxy makes before a login (Cloud SQL: no .gserviceaccount.com suffix).
 */
export async function signToken(instance: InstanceConfig, user: string, identities: Identities, clouds: CloudCredentials): Promise<string> {
  if (instance.cloud !== 'aws') {
    const refused = instance.cloud === 'gcp' ? cloudSqlWords(instance.cloudSql?.instance).refuseUser?.(user) : undefined;
    if (refused) throw new Error(`${refused.message}. ${refused.hint}`);
    return (await clouds.tokens(instance.cloud).get()).value;
  }
  const token = await tokensOf(identities, instance).get({
    host: instance.endpoint.host,
    port: instance.endpoint.port,
    region: instance.region,
    user,
  });
  return token.value;
}
