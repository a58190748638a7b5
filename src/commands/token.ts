// `pg-iam-proxy token`: one token, as `aws rds generate-db-auth-token` prints it.
import type { Identities } from '../aws/identity.js';
import type { InstanceConfig } from '../config.js';

/** Sign a token for the instance's endpoint and `user`, with the user's identity (`users:`) or the instance's. */
export async function signToken(instance: InstanceConfig, user: string, identities: Identities): Promise<string> {
  const { tokens } = identities.for(instance.users?.get(user) ?? instance.identity, instance.region);
  const token = await tokens.get({ host: instance.endpoint.host, port: instance.endpoint.port, region: instance.region, user });
  return token.value;
}
