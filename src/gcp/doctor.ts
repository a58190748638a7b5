// `pg-iam-proxy doctor` for Cloud SQL, in the walk every token cloud takes (src/oauth/doctor.ts): the
// account the credentials stand for, the connection name and user against it, and the instance as the SQL
// Admin API describes it (unless --connect-to and --ca-file do without the API).
import type { CloudDoctor } from '../cloud.js';
import { formatHostPort } from '../host-port.js';
import { redactSecrets } from '../log.js';
import { holdersOf } from '../oauth/bearer-cloud.js';
import { bearerDoctor } from '../oauth/doctor.js';
import { type CloudSqlProcess, cloudSqlCloud } from './cloud.js';
import { casDnsName, type ConnectSettings, pickAddress } from './connector.js';
import { cloudSqlWording, SERVICE_ACCOUNT_SUFFIX } from './iam.js';

export const cloudSqlDoctor: CloudDoctor<CloudSqlProcess> = (instance, options, process) => {
  const { user } = options;
  const clouds = holdersOf(process.clouds, 'gcp');
  const tokens = clouds.tokens('gcp');
  const cloudSql = instance.cloudSql!;
  const wording = cloudSqlWording(cloudSql.instance);
  return bearerDoctor(instance, options, {
    title: cloudSqlCloud.title,
    credentialsTitle: 'Google credentials (Application Default Credentials)',
    namesTitle: 'Connection name and user',
    tokens,
    wording,
    noTokenFix:
      'Make `gcloud auth application-default print-access-token` work here: gcloud auth application-default login, GOOGLE_APPLICATION_CREDENTIALS=key.json, workload identity federation, or the attached service account on GCE, GKE or Cloud Run.',

    async describeToken(token, { set }) {
      const expires = new Date(token.expiresAt).toISOString();
      const account = await clouds.account('gcp');
      set(
        'credentials',
        'pass',
        `${tokens.label}: an access token${account ? ` for ${account}` : ''} with the sqlservice.login scope, valid until ${expires}`,
        undefined,
        { ...(account ? { account } : {}), expiresAt: expires },
      );
      return account;
    },

    checkNames(principal, { set, fail }) {
      const refused = wording.refuseUser?.(user);
      if (refused) throw fail('endpoint', refused.message, refused.hint);
      const expected = principal?.endsWith(SERVICE_ACCOUNT_SUFFIX) ? principal.slice(0, -SERVICE_ACCOUNT_SUFFIX.length) : principal;
      const name = `${cloudSql.instance.connectionName} is a Cloud SQL connection name`;
      if (expected && expected !== user)
        set(
          'endpoint',
          'warn',
          `${name}; the user "${user}" is not the credentials' account's (${expected})`,
          `Log in as "${expected}", or use that user's credentials.`,
        );
      else set('endpoint', 'pass', `${name}; user "${user}"`);
    },

    ownSteps: [
      {
        checks: [['instance', 'Cloud SQL instance (SQL Admin API)']],
        // What the API says of the instance (unless --connect-to and --ca-file do without it).
        async run({ set, fail }) {
          const { project, instance: name } = cloudSql.instance;
          const dial = instance.connectTo !== instance.endpoint;
          if (dial && instance.caFile) {
            set(
              'instance',
              'pass',
              `not asked: --connect-to ${formatHostPort(instance.connectTo)} and --ca-file ${instance.caFile} say where and whom to trust; the certificate must have CN ${project}:${name}`,
            );
            return;
          }
          let settings: ConnectSettings;
          try {
            settings = await clouds.connectSettings()(cloudSql.instance, cloudSql.api, options.connectTimeoutMs);
          } catch (err) {
            throw fail('instance', redactSecrets((err as Error).message), (err as { hint?: string }).hint);
          }
          const address = pickAddress(settings, cloudSql.ipTypes);
          const dns = casDnsName(settings);
          set(
            'instance',
            'pass',
            `${settings.databaseVersion ?? 'PostgreSQL'} in ${settings.region ?? instance.region}; address ${address ?? 'none'}${dial ? ` (dialling --connect-to ${formatHostPort(instance.connectTo)} instead)` : ''}; server CA ${settings.serverCaMode ?? 'mode unknown'}; the certificate must ${dns ? `name ${dns}` : `have CN ${project}:${name}`}`,
            undefined,
            { address, dnsName: dns, serverCaMode: settings.serverCaMode, databaseVersion: settings.databaseVersion },
          );
        },
      },
    ],

    connector: () => cloudSqlCloud.seams(process).connectorFor(instance, options.connectTimeoutMs),
    verifiedFor: cloudSql.instance.connectionName,
  });
};
