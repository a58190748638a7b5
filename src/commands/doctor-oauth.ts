// `pg-iam-proxy doctor` for Azure and Cloud SQL: the same walk as for RDS, in each cloud's terms. The
// token first (who it names, for what), the names (the server name, the connection name, the user), Cloud
// SQL's instance as the SQL Admin API describes it, then the connection through the proxy's own connector
// (TCP, TLS, the certificate's identity) and a real login, whose refusal is explained cause by cause.
import type { TLSSocket } from 'node:tls';
import { AZURE_RESOURCE, AZURE_SCOPE, entraChecklist, entraClaims, entraWords } from '../azure/entra.js';
import { CLOUD_NAMES, isAzureServerName } from '../clouds.js';
import type { InstanceConfig } from '../config.js';
import { casDnsName, type ConnectSettings, pickAddress } from '../gcp/connector.js';
import { cloudSqlChecklist, cloudSqlWords, SERVICE_ACCOUNT_SUFFIX } from '../gcp/iam.js';
import { formatHostPort } from '../host-port.js';
import { redactSecrets } from '../log.js';
import type { BearerToken } from '../oauth/tokens.js';
import type { CloudCredentials } from '../oauth/sources.js';
import { Failure, type WireError } from '../protocol/errors.js';
import { ProtocolVersion, TERMINATE_MESSAGE } from '../protocol/constants.js';
import { startupMessage } from '../protocol/startup.js';
import { loginUpstream, PasswordMethodRefused, TokenRejected } from '../upstream/auth.js';
import { oauthSeams } from './wiring.js';
import type { Check, CheckStatus, DoctorOptions, DoctorReport } from './doctor.js';

/** A failure that makes the later checks meaningless. */
class Stop extends Error {}

/** A checklist of "1) ... 2) ..." as doctor's fix lines. */
const lines = (checklist: string) =>
  checklist
    .replace(/^Check, most likely first: /, '')
    .split(/ (?=\d\) )/)
    .join('\n');

export async function runOAuthDoctor(
  instance: InstanceConfig,
  options: DoctorOptions & { readonly clouds: CloudCredentials },
  checkPooling: (
    instance: InstanceConfig,
    set: (status: 'pass' | 'warn', found: string, fix?: string, data?: Record<string, unknown>) => void,
    server: TLSSocket,
    timeoutMs: number,
  ) => Promise<void>,
): Promise<DoctorReport> {
  const cloud = instance.cloud as 'azure' | 'gcp';
  const azure = cloud === 'azure';
  const list: Array<[string, string]> = [
    ['credentials', azure ? 'Azure credentials (DefaultAzureCredential)' : 'Google credentials (Application Default Credentials)'],
    ['endpoint', azure ? 'Server name and user' : 'Connection name and user'],
    ...(azure ? [] : ([['instance', 'Cloud SQL instance (SQL Admin API)']] as Array<[string, string]>)),
    ['tcp', 'TCP connection'],
    ['tls', 'TLS offered by the server'],
    ['certificate', 'Server certificate'],
    ['login', 'Login'],
    ['pooling', 'Pooling against the server'],
  ];
  const checks: Check[] = list.map(([id, title]) => ({ id, title, status: 'skip', found: 'not checked: an earlier check failed' }));
  const set = (id: string, status: CheckStatus, found: string, fix?: string, data?: Record<string, unknown>) => {
    Object.assign(checks.find((c) => c.id === id)!, { status, found, ...(fix ? { fix } : {}), ...(data ? { data } : {}) });
  };
  const fail = (id: string, found: string, fix?: string, data?: Record<string, unknown>) => (set(id, 'fail', found, fix, data), new Stop());
  const { user, clouds } = options;
  const tokens = clouds.tokens(cloud);
  let ok = false;
  try {
    // 1. A token, and who it names.
    // Without one the walk goes on to what needs none (names, TCP, TLS, the certificate).
    let token: BearerToken | undefined;
    try {
      token = await tokens.get();
    } catch (err) {
      fail(
        'credentials',
        `${tokens.label} gave no token: ${redactSecrets((err as Error).message).replace(/\s*\n\s*/g, ' ')}`,
        azure
          ? `Make \`az account get-access-token --scope ${AZURE_SCOPE}\` work here: az login (as the user the proxy runs as), a managed identity, workload identity, or AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET.`
          : 'Make `gcloud auth application-default print-access-token` work here: gcloud auth application-default login, GOOGLE_APPLICATION_CREDENTIALS=key.json, workload identity federation, or the attached service account on GCE, GKE or Cloud Run.',
      );
    }
    const expires = token && new Date(token.expiresAt).toISOString();
    let principal: string | undefined;
    if (!token) {
      // Said above.
    } else if (azure) {
      const claims = entraClaims(token.value);
      principal = claims.principal;
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
    } else {
      const account = await clouds.googleAccount();
      principal = account;
      set(
        'credentials',
        'pass',
        `${tokens.label}: an access token${account ? ` for ${account}` : ''} with the sqlservice.login scope, valid until ${expires}`,
        undefined,
        { ...(account ? { account } : {}), expiresAt: expires },
      );
    }

    // 2. Names: the endpoint's form, the user against the principal.
    if (azure) {
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
    } else {
      const refused = cloudSqlWords(instance.cloudSql?.instance).refuseUser?.(user);
      if (refused) throw fail('endpoint', refused.message, refused.hint);
      const expected = principal?.endsWith(SERVICE_ACCOUNT_SUFFIX) ? principal.slice(0, -SERVICE_ACCOUNT_SUFFIX.length) : principal;
      const name = `${instance.cloudSql!.instance.connectionName} is a Cloud SQL connection name`;
      if (expected && expected !== user)
        set(
          'endpoint',
          'warn',
          `${name}; the user "${user}" is not the credentials' account's (${expected})`,
          `Log in as "${expected}", or use that user's credentials.`,
        );
      else set('endpoint', 'pass', `${name}; user "${user}"`);
    }

    // 3. Cloud SQL: what the API says of the instance (unless --connect-to and --ca-file do without it).
    const seams = oauthSeams(clouds);
    const connector = seams.connectorFor(instance, options.connectTimeoutMs);
    if (!azure) {
      const dial = instance.connectTo !== instance.endpoint;
      if (dial && instance.caFile) {
        set(
          'instance',
          'pass',
          `not asked: --connect-to ${formatHostPort(instance.connectTo)} and --ca-file ${instance.caFile} say where and whom to trust; the certificate must have CN ${instance.cloudSql!.instance.project}:${instance.cloudSql!.instance.instance}`,
        );
      } else {
        let settings: ConnectSettings;
        try {
          settings = await clouds.connectSettings()(instance.cloudSql!.instance, instance.cloudSql!.api, options.connectTimeoutMs);
        } catch (err) {
          throw fail('instance', redactSecrets((err as Error).message), (err as { hint?: string }).hint);
        }
        const address = pickAddress(settings, instance.cloudSql!.ipTypes);
        const dns = casDnsName(settings);
        set(
          'instance',
          'pass',
          `${settings.databaseVersion ?? 'PostgreSQL'} in ${settings.region ?? instance.region}; address ${address ?? 'none'}${dial ? ` (dialling --connect-to ${formatHostPort(instance.connectTo)} instead)` : ''}; server CA ${settings.serverCaMode ?? 'mode unknown'}; the certificate must ${dns ? `name ${dns}` : `have CN ${instance.cloudSql!.instance.project}:${instance.cloudSql!.instance.instance}`}`,
          undefined,
          { address, dnsName: dns, serverCaMode: settings.serverCaMode, databaseVersion: settings.databaseVersion },
        );
      }
    }

    // 4. The connection through the proxy's own connector: each failure belongs to one check.
    let server: TLSSocket;
    try {
      server = await connector.connect(AbortSignal.timeout(options.connectTimeoutMs));
    } catch (err) {
      const e = (connector.explain?.(err) ?? err) as WireError;
      const id =
        e.reason === Failure.UpstreamUnreachable || e.reason === Failure.UpstreamTimeout
          ? 'tcp'
          : e.reason === Failure.UpstreamNoTls || e.reason === Failure.UpstreamProtocol
            ? 'tls'
            : 'certificate';
      if (id !== 'tcp') set('tcp', 'pass', `connected to ${formatHostPort(connector.connectTo)}`);
      if (id === 'certificate') set('tls', 'pass', 'the server accepts TLS');
      throw fail(id, redactSecrets(e.message) + (e.detail ? ` (${e.detail})` : ''), e.hint);
    }
    try {
      set('tcp', 'pass', `connected to ${formatHostPort(connector.connectTo)}`);
      set('tls', 'pass', `the server accepts TLS (${server.getProtocol()})`);
      const cert = server.getPeerCertificate();
      const validTo = new Date(cert.valid_to).toISOString();
      set(
        'certificate',
        'pass',
        `issued by ${cert.issuer?.CN ?? cert.issuer?.O ?? 'unknown issuer'} to ${cert.subject?.CN ?? 'no CN'}${cert.subjectaltname ? ` (${cert.subjectaltname})` : ''}, verified for ${azure ? instance.endpoint.host : instance.cloudSql!.instance.connectionName}, valid until ${validTo}`,
        undefined,
        { subject: cert.subject?.CN, issuer: cert.issuer?.CN, names: cert.subjectaltname, validTo },
      );
      if (!token) {
        for (const id of ['login', 'pooling']) set(id, 'skip', 'not checked: it needs a token, which could not be had (above)');
        throw new Stop();
      }
      const had = token;
      // 5. A real login with the token.
      const startup = startupMessage(ProtocolVersion.V3_0, [
        { name: 'user', value: Buffer.from(user) },
        { name: 'database', value: Buffer.from(options.database) },
        { name: 'application_name', value: Buffer.from('pg-iam-proxy doctor') },
      ]);
      let login: Awaited<ReturnType<typeof loginUpstream>>;
      try {
        login = await loginUpstream(server, startup, { token: async () => had, signal: AbortSignal.timeout(options.connectTimeoutMs) });
      } catch (err) {
        if (err instanceof TokenRejected) {
          const checklist = azure ? entraChecklist(user, entraClaims(had.value)) : cloudSqlChecklist(user, instance.cloudSql?.instance);
          throw fail('login', `the server rejected the access token: ${err.message}`, lines(checklist));
        }
        const e =
          err instanceof PasswordMethodRefused
            ? (azure ? entraWords : cloudSqlWords(instance.cloudSql?.instance)).notTokenUser(user, err.method)
            : ((connector.explain?.(err) ?? err) as WireError);
        throw fail('login', redactSecrets(e.message), e.hint);
      }
      if (login.failure) {
        const missingDb = /database ".*" does not exist/.test(login.failure);
        throw fail(
          'login',
          `the token was accepted, then the server ended the session: ${login.failure}`,
          missingDb
            ? `Pick an existing database with --database (e.g. postgres), or create it: CREATE DATABASE "${options.database}";`
            : undefined,
        );
      }
      set('login', 'pass', `logged in as "${user}" to database "${options.database}" with ${CLOUD_NAMES[cloud]}'s token over verified TLS`);
      await checkPooling(
        instance,
        (status, found, fix, data) => set('pooling', status, found, fix, data),
        server,
        options.connectTimeoutMs,
      );
      server.end(TERMINATE_MESSAGE);
      ok = true;
    } finally {
      server.destroy();
    }
  } catch (err) {
    /* c8 ignore next -- every check ends in set() or fail(); anything else is a bug worth a stack trace */
    if (!(err instanceof Stop)) throw err;
  }
  return {
    ok,
    endpoint: formatHostPort(instance.endpoint),
    connectTo: formatHostPort(instance.connectTo),
    user,
    database: options.database,
    checks,
  };
}
