// Google Cloud SQL with IAM database authentication, as the proxy's table of clouds has it
// (src/clouds/table.ts): one access token per process from Application Default Credentials, the
// instance's address and server CA from the SQL Admin API.
import { BearerAuthenticator } from '../oauth/authenticator.js';
import { announceOnce, type BearerCloud, type BearerHolders, holdersOf, tokenFor } from '../oauth/bearer-cloud.js';
import { CloudSqlConnector, type ConnectSettingsFetch } from './connector.js';
import { cloudSqlWording, GOOGLE_LABEL, googleSource } from './iam.js';
import { parseCloudSqlName } from './instance.js';
import { cloudSqlSettings } from './settings.js';

/** What Cloud SQL needs of the process: the holder of its one token, and connect.get, shared by its instances. */
export interface CloudSqlProcess {
  readonly clouds: (BearerHolders<'gcp'> & { connectSettings(): ConnectSettingsFetch }) | undefined;
}

export const cloudSqlCloud: BearerCloud<CloudSqlProcess> = {
  title: 'Google Cloud SQL',
  credentialsNoun: 'credentials or access token',
  tokenVerb: 'get',
  fileAwsIdentity: false,
  recognises: (endpoint) => parseCloudSqlName(endpoint) !== undefined,
  settings: cloudSqlSettings,
  bearer: { label: GOOGLE_LABEL, source: googleSource },

  seams({ clouds }) {
    return {
      authenticatorFor: (instance) =>
        new BearerAuthenticator(holdersOf(clouds, 'gcp').tokens('gcp'), cloudSqlWording(instance.cloudSql?.instance)),
      connectorFor: (instance, connectTimeoutMs) =>
        new CloudSqlConnector(instance, connectTimeoutMs, holdersOf(clouds, 'gcp').connectSettings()),
    };
  },

  announce: ({ clouds }, _instance, log, seen) => announceOnce(clouds, 'gcp', log, seen),
  // No .gserviceaccount.com suffix, as a login checks.
  token: ({ clouds }, instance, user) =>
    tokenFor(holdersOf(clouds, 'gcp').tokens('gcp'), cloudSqlWording(instance.cloudSql?.instance), user),
  doctor: async () => (await import('./doctor.js')).cloudSqlDoctor,
  // GOOGLE_APPLICATION_CREDENTIALS only names a file, the same user's to read anyway.
  credentialVariables: [],
};
