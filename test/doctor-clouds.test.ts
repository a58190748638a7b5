// doctor for Azure and Cloud SQL in process, against the real database: each way the chain breaks lands
// on its own check with its own fix. Tokens come through the CloudCredentials seam (signed with the
// database's test key), so each case can hold the token it needs.
import t from 'tap';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { resolveInstance, type InstanceInput } from '../src/config.js';
import { formatReport, runDoctor, type DoctorReport } from '../src/commands/doctor.js';
import { Identities } from '../src/aws/identity.js';
import { CloudCredentials } from '../src/clouds/credentials.js';
import { closedPort } from './support/proxy.js';
import { testJwt } from './support/oauth.js';
import { AZURE_ENDPOINT, AZURE_USER, CLOUD_SQL_NAME, GCP_USER, startTestDb } from './support/testdb.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const AUDIENCE = 'https://ossrdbms-aad.database.windows.net';

async function doctor(
  input: Partial<InstanceInput> & { endpoint: string },
  user: string,
  claims: Record<string, unknown>,
  database = 'orders',
) {
  const { instance } = resolveInstance({ listen: null, connectTo: `127.0.0.1:${db.port}`, caFile: db.caFile, ...input });
  const now = Math.floor(Date.now() / 1000);
  const token = testJwt(db.jwtKey, { iat: now, exp: now + 3600, ...claims });
  const clouds = new CloudCredentials({
    fetchFor: () => async () => ({ value: token, expiresAt: (now + 3600) * 1000, signer: {} }),
    connectSettings: async () => ({}),
  });
  const identities = new Identities();
  try {
    const report = await runDoctor(instance, {
      user,
      database,
      connectTimeoutMs: 5_000,
      identities,
      configWarnings: [],
      regionSource: 'env',
      clouds,
    });
    t.notOk(JSON.stringify(report).includes(token), 'no token in the report');
    return report;
  } finally {
    clouds.close();
    identities.close();
  }
}

const statuses = (report: DoctorReport) => Object.fromEntries(report.checks.map((c) => [c.id, c.status]));
const check = (report: DoctorReport, id: string) => report.checks.find((c) => c.id === id)!;
const azure = { aud: AUDIENCE, tid: 'tenant-1', upn: AZURE_USER };
const endpoint = `${AZURE_ENDPOINT}:${db.port}`;

t.test('Azure: a token for another resource stops at the credentials', async (t) => {
  const report = await doctor({ endpoint }, AZURE_USER, { ...azure, aud: 'https://management.azure.com/' });
  t.equal(report.ok, false);
  t.match(check(report, 'credentials'), { status: 'fail', found: /is for https:\/\/management\.azure\.com\/, not https:\/\/ossrdbms-aad/ });
});

t.test('Azure: a user name that differs in case only is flagged, and the login refused with the causes', async (t) => {
  const report = await doctor({ endpoint }, 'MixedCase_User', { ...azure, upn: 'mixedcase_user' });
  t.match(check(report, 'endpoint'), {
    status: 'warn',
    found: /differs from the token's principal "mixedcase_user" in case only/,
    fix: /log in as "mixedcase_user"/,
  });
  t.match(check(report, 'login'), {
    status: 'fail',
    found: /rejected the access token/,
    fix: /^1\) the role was created.*\n2\) The user name/s,
  });
  t.match(formatReport(report, false), /Stopped at: Login\./);
});

t.test('Azure: a service principal (no user name in the token) and pooling checked against the server', async (t) => {
  // The checker wants upn = the user; an object ID alone names no user, so the login is refused: the
  // names check passes (nothing to compare), the walk reaches the login.
  const report = await doctor({ endpoint, poolMode: 'session' }, AZURE_USER, { aud: AUDIENCE, oid: '0000-1111' });
  t.match(check(report, 'credentials'), { status: 'pass', found: /a token for object ID 0000-1111/ });
  t.equal(check(report, 'endpoint').status, 'pass');
  const ok = await doctor({ endpoint, poolMode: 'session' }, AZURE_USER, azure);
  t.equal(ok.ok, true);
  t.match(check(ok, 'pooling'), { status: 'pass', found: /--pool-mode session, --pool-size 10/ });
});

t.test('Azure: a name the certificate does not carry fails the certificate check', async (t) => {
  const report = await doctor({ endpoint: `pg.internal.example:${db.port}`, cloud: 'azure' }, AZURE_USER, azure);
  t.same(statuses(report), {
    credentials: 'pass',
    endpoint: 'warn',
    tcp: 'pass',
    tls: 'pass',
    certificate: 'fail',
    login: 'skip',
    pooling: 'skip',
  });
  t.match(check(report, 'certificate'), {
    found: /does not match host name "pg\.internal\.example"/,
    fix: /NAME\.postgres\.database\.azure\.com/,
  });
});

t.test('Azure: nothing listening fails TCP; a server without TLS fails TLS', async (t) => {
  const closed = await doctor({ endpoint, connectTo: `127.0.0.1:${await closedPort()}` }, AZURE_USER, azure);
  t.match(check(closed, 'tcp'), { status: 'fail', found: /could not connect to the server at 127\.0\.0\.1:\d+: ECONNREFUSED/ });
  const plain = createServer((socket) => socket.on('error', () => undefined).end('N'));
  plain.listen(0, '127.0.0.1');
  await once(plain, 'listening');
  const noTls = await doctor({ endpoint, connectTo: `127.0.0.1:${(plain.address() as { port: number }).port}` }, AZURE_USER, azure);
  t.same(statuses(noTls), {
    credentials: 'pass',
    endpoint: 'pass',
    tcp: 'pass',
    tls: 'fail',
    certificate: 'skip',
    login: 'skip',
    pooling: 'skip',
  });
  t.match(check(noTls, 'tls'), { found: /does not accept TLS/, fix: /Azure always offers TLS/ });
  plain.close();
});

t.test('Azure: no token still checks what needs none (names, TCP, TLS, the certificate)', async (t) => {
  const { instance } = resolveInstance({ endpoint, listen: null, connectTo: `127.0.0.1:${db.port}`, caFile: db.caFile });
  const clouds = new CloudCredentials({
    fetchFor: () => async () => Promise.reject(new Error('DefaultAzureCredential: no credential in the chain gave a token')),
  });
  const identities = new Identities();
  t.teardown(() => (clouds.close(), identities.close()));
  const report = await runDoctor(instance, {
    user: AZURE_USER,
    database: 'orders',
    connectTimeoutMs: 5_000,
    identities,
    configWarnings: [],
    regionSource: 'env',
    clouds,
  });
  t.equal(report.ok, false);
  t.same(statuses(report), {
    credentials: 'fail',
    endpoint: 'pass',
    tcp: 'pass',
    tls: 'pass',
    certificate: 'pass',
    login: 'skip',
    pooling: 'skip',
  });
  t.match(check(report, 'credentials'), { found: /gave no token: .*no credential in the chain/, fix: /az login/ });
  t.match(check(report, 'login'), { found: /not checked: it needs a token/ });
  t.match(formatReport(report, false), /Stopped at: Azure credentials/);
});

t.test('Azure: a password user, and a database that does not exist', async (t) => {
  const password = await doctor({ endpoint }, 'pw_user', { ...azure, upn: 'pw_user' });
  t.match(check(password, 'login'), {
    status: 'fail',
    found: /"pw_user" is not set up for Microsoft Entra authentication: the server asked for SCRAM-SHA-256/,
  });
  const missing = await doctor({ endpoint }, AZURE_USER, azure, 'nosuchdb');
  t.match(check(missing, 'login'), {
    status: 'fail',
    found: /the token was accepted, then the server ended the session: database "nosuchdb" does not exist/,
    fix: /--database/,
  });
});

t.test('Cloud SQL: --connect-to and --ca-file without the API; the certificate must have CN PROJECT:INSTANCE', async (t) => {
  const report = await doctor({ endpoint: `${CLOUD_SQL_NAME}:${db.port}` }, GCP_USER, {
    email: `${GCP_USER}.gserviceaccount.com`,
    scope: 'https://www.googleapis.com/auth/sqlservice.login',
  });
  t.match(check(report, 'instance'), {
    status: 'pass',
    found: /not asked: --connect-to 127\.0\.0\.1:\d+ and --ca-file .* the certificate must have CN my-project:myinstance/,
  });
  t.match(check(report, 'certificate'), { status: 'fail', found: /certificate does not match/ });
  await db.useCertificate('cloudsql-cn');
  t.teardown(() => db.useCertificate('names'));
  const legacy = await doctor({ endpoint: `${CLOUD_SQL_NAME}:${db.port}` }, GCP_USER, {
    email: `${GCP_USER}.gserviceaccount.com`,
    scope: 'https://www.googleapis.com/auth/sqlservice.login',
  });
  t.equal(legacy.ok, true);
  t.match(check(legacy, 'certificate'), {
    status: 'pass',
    found: /to my-project:myinstance, verified for my-project:us-central1:myinstance/,
  });
  const password = await doctor({ endpoint: `${CLOUD_SQL_NAME}:${db.port}` }, 'pw_user', {});
  t.match(check(password, 'login'), {
    status: 'fail',
    found: /not set up for IAM database authentication/,
    fix: /gcloud sql users create pw_user/,
  });
});
