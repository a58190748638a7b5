// Azure Database for PostgreSQL with Microsoft Entra ID authentication, as the proxy's table of clouds has
// it (src/clouds/table.ts): one Entra ID token per process from DefaultAzureCredential, TLS verify-full
// against the server name with Node's public roots (or --ca-file).
import { isIP } from 'node:net';
import type { SecureContext } from 'node:tls';
import type { CloudSettings } from '../cloud.js';
import { formatHostPort } from '../host-port.js';
import { BearerAuthenticator } from '../oauth/authenticator.js';
import { announceOnce, type BearerCloud, type BearerHolders, holdersOf, tokenFor } from '../oauth/bearer-cloud.js';
import { pgTlsConnector } from '../upstream/connect.js';
import { trustByFile, upstreamContext } from '../tls/upstream.js';
import { AZURE_LABEL, azureConnectHints, azureFetch, entraWording } from './entra.js';
import { isAzureServerName } from './server-name.js';

/** What Azure needs of the process: the holder of its one token. */
export interface AzureProcess {
  readonly clouds: BearerHolders<'azure'> | undefined;
}

const settings: CloudSettings = {
  credentialsFrom: 'DefaultAzureCredential (az login, a managed identity, AZURE_* variables)',
  // Nothing of Azure's own to refuse elsewhere: its credentials come from the environment.
  refuseOn: () => undefined,
  resolve(input, { fail, hostPort }, warnings) {
    const endpoint = hostPort(input.endpoint, 'endpoint');
    if (isIP(endpoint.host)) {
      throw fail(
        `endpoint ${endpoint.host} is an IP address: Azure's certificate names the server (NAME.postgres.database.azure.com). Pass the server name and --connect-to ${formatHostPort(endpoint)}.`,
      );
    }
    if (!isAzureServerName(endpoint.host))
      warnings.push(
        `endpoint ${endpoint.host} is not a *.postgres.database.azure.com name: its certificate must name it, or the connection is refused.`,
      );
    const connectTo = input.connectTo ? hostPort(input.connectTo, '--connect-to') : endpoint;
    return { endpoint, connectTo, region: '', identity: Object.freeze({}) };
  },
};

export const azureCloud: BearerCloud<AzureProcess> = {
  title: 'Azure Database for PostgreSQL',
  credentialsNoun: 'credentials or access token',
  tokenVerb: 'get',
  fileAwsIdentity: false,
  recognises: (endpoint) => isAzureServerName(endpoint.trim().replace(/:\d+$/, '')),
  settings,
  bearer: { label: AZURE_LABEL, source: () => ({ fetch: azureFetch() }) },

  seams({ clouds }) {
    // No `ca`: Node's public roots (with NODE_EXTRA_CA_CERTS), DigiCert Global Root G2 and Microsoft RSA Root CA 2017 among them.
    const tlsFor = trustByFile<SecureContext>((caFile, ca) => upstreamContext(caFile ? ca : undefined));
    return {
      authenticatorFor: () => new BearerAuthenticator(holdersOf(clouds, 'azure').tokens('azure'), entraWording),
      connectorFor: (instance, connectTimeoutMs) =>
        pgTlsConnector({
          endpoint: instance.endpoint,
          connectTo: instance.connectTo,
          tls: tlsFor(instance.caFile),
          hints: azureConnectHints(instance.caFile),
          connectTimeoutMs,
        }),
    };
  },

  announce: ({ clouds }, _instance, log, seen) => announceOnce(clouds, 'azure', log, seen),
  token: ({ clouds }, _instance, user) => tokenFor(holdersOf(clouds, 'azure').tokens('azure'), entraWording, user),
  doctor: async () => (await import('./doctor.js')).azureDoctor,

  // @azure/identity's secrets (the proxy gets the command's tokens for it too).
  credentialVariables: [
    'AZURE_CLIENT_SECRET',
    'AZURE_CLIENT_CERTIFICATE_PASSWORD',
    'AZURE_PASSWORD',
    'IDENTITY_HEADER', // the managed identity endpoint's secret (App Service, Functions, Arc)
    'MSI_SECRET', // its older name
  ],
};
