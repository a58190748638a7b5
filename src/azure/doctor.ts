// `pg-iam-proxy doctor` for Azure, in the walk every token cloud takes (src/oauth/doctor.ts): whom the
// Entra ID token names and for which resource, and the server name and user against it.
import type { CloudDoctor } from '../cloud.js';
import { bearerDoctor } from '../oauth/doctor.js';
import { holdersOf } from '../oauth/bearer-cloud.js';
import { type AzureProcess, azureCloud } from './cloud.js';
import { AZURE_RESOURCE, AZURE_SCOPE, entraClaims, entraWording } from './entra.js';
import { isAzureServerName } from './server-name.js';

export const azureDoctor: CloudDoctor<AzureProcess> = (instance, options, process) => {
  const { user } = options;
  const tokens = holdersOf(process.clouds, 'azure').tokens('azure');
  return bearerDoctor(instance, options, {
    title: azureCloud.title,
    credentialsTitle: 'Azure credentials (DefaultAzureCredential)',
    namesTitle: 'Server name and user',
    tokens,
    wording: entraWording,
    noTokenFix: `Make \`az account get-access-token --scope ${AZURE_SCOPE}\` work here: az login (as the user the proxy runs as), a managed identity, workload identity, or AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET.`,

    async describeToken(token, { set, fail }) {
      const expires = new Date(token.expiresAt).toISOString();
      const claims = entraClaims(token.value);
      const data = { principal: claims.principal, tenant: claims.tenant, audience: claims.audience, expiresAt: expires };
      if (claims.audience && claims.audience.replace(/\/$/, '') !== AZURE_RESOURCE) {
        throw fail(
          'credentials',
          `the token names ${claims.principal} but is for ${claims.audience}, not ${AZURE_RESOURCE}`,
          'Something hands out tokens for another resource: check AZURE_* variables and the credential DefaultAzureCredential picks.',
          data,
        );
      }
      set(
        'credentials',
        'pass',
        `${tokens.label}: a token for ${claims.principal}${claims.tenant ? `, tenant ${claims.tenant}` : ''}, valid until ${expires}`,
        undefined,
        data,
      );
      return claims.principal;
    },

    checkNames(principal, { set }) {
      const host = instance.endpoint.host;
      const named = isAzureServerName(host) ? `${host} is an Azure server name` : `${host} is not a *.postgres.database.azure.com name`;
      if (principal && principal !== user && principal.toLowerCase() === user.toLowerCase()) {
        set(
          'endpoint',
          'warn',
          `${named}; the user "${user}" differs from the token's principal "${principal}" in case only`,
          `Entra names are case-sensitive: log in as "${principal}".`,
        );
      } else if (principal && !principal.startsWith('object ID') && principal !== user) {
        set(
          'endpoint',
          'warn',
          `${named}; the user "${user}" is not the token's principal (${principal})`,
          'That works only when the user is a group the principal belongs to (pgaadauth_create_principal with the group name); otherwise log in as the principal.',
        );
      } else set('endpoint', isAzureServerName(host) ? 'pass' : 'warn', `${named}; user "${user}"`);
    },

    connector: () => azureCloud.seams(process).connectorFor(instance, options.connectTimeoutMs),
    verifiedFor: instance.endpoint.host,
  });
};
