// The commands as users run them, for Azure and Cloud SQL: `token` prints the cloud's access token (and
// nothing else), `doctor` walks the chain in the cloud's terms, `run` serves a command; each a process of
// its own whose SDKs reach only the loopback stand-ins.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { BIN, startCli } from './support/cli.js';
import { closedPort } from './support/proxy.js';
import {
  AzureIdentityStandIn,
  cleanCloudEnv,
  GceMetadataStandIn,
  LOGIN_SCOPE,
  noTokenIn as noIssuedToken,
  SqlAdminStandIn,
} from './support/oauth.js';
import { AZURE_ENDPOINT, AZURE_USER, CLOUD_SQL_DNS, CLOUD_SQL_NAME, GCP_USER, startTestDb } from './support/testdb.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const home = mkdtempSync(join(tmpdir(), 'pg-iam-proxy-cloud-cli-'));
t.teardown(() => rmSync(home, { recursive: true, force: true }));
const msi = await new AzureIdentityStandIn(db.jwtKey, AZURE_USER).start();
t.teardown(() => msi.close());
const metadata = await new GceMetadataStandIn(db.jwtKey, `${GCP_USER}.gserviceaccount.com`).start();
t.teardown(() => metadata.close());
const api = await new SqlAdminStandIn(db.jwtKey).start();
t.teardown(() => api.close());
api.instances.set('my-project/myinstance', {
  serverCaMode: 'GOOGLE_MANAGED_CAS_CA',
  region: 'us-central1',
  databaseVersion: 'POSTGRES_15',
  ipAddresses: [{ type: 'PRIMARY', ipAddress: '127.0.0.1' }],
  serverCaCert: { cert: db.caPem },
  dnsName: CLOUD_SQL_DNS,
});

const env = cleanCloudEnv(home, { ...msi.env(), ...metadata.env() });
const azure = [`${AZURE_ENDPOINT}:${db.port}`, '--connect-to', `127.0.0.1:${db.port}`, '--ca-file', db.caFile];
const gcp = [`${CLOUD_SQL_NAME}:${db.port}`, '--sqladmin-api-endpoint', api.origin];

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], extra: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...env, ...extra }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

const issued = () => [...msi.tokens, ...metadata.tokens];
const noTokenIn = (t: { notOk: (v: unknown, m: string) => unknown }, text: string, what: string) => noIssuedToken(t, issued(), text, what);

t.test('token: the Entra ID access token, on stdout alone', async (t) => {
  const { code, stdout, stderr } = await cli(['token', ...azure, '--user', AZURE_USER]);
  t.equal(code, 0, stderr);
  t.ok(stdout === `${msi.tokens.at(-1)}\n`, 'the token the identity endpoint issued');
  t.equal(msi.count(), 1);
});

t.test('token: the Cloud SQL login token; a .gserviceaccount.com user is refused without a fetch', async (t) => {
  const { code, stdout, stderr } = await cli(['token', CLOUD_SQL_NAME, '--user', GCP_USER]);
  t.equal(code, 0, stderr);
  t.ok(stdout === `${metadata.tokens.at(-1)}\n`, 'the token the metadata server issued');
  t.equal(metadata.tokenRequests(LOGIN_SCOPE), 1, 'with the sqlservice.login scope');
  const refused = await cli(['token', CLOUD_SQL_NAME, '--user', `${GCP_USER}.gserviceaccount.com`]);
  t.equal(refused.code, 1);
  t.match(
    refused.stderr,
    /cannot get a token: Cloud SQL IAM user names leave off \.gserviceaccount\.com: log in as "app-sa@my-project\.iam"/,
  );
  t.equal(metadata.tokenRequests(LOGIN_SCOPE), 1, 'no fetch for it');
});

t.test('token: AWS settings are refused for another cloud', async (t) => {
  const { code, stderr } = await cli(['token', ...azure, '--user', AZURE_USER, '--profile', 'app']);
  t.equal(code, 2);
  t.match(stderr, /--profile is an AWS setting, and .* is Azure Database for PostgreSQL: its credentials come from DefaultAzureCredential/);
});

t.test('doctor, Azure: every check passes and the login succeeds', async (t) => {
  const { code, stdout, stderr } = await cli(['doctor', ...azure, '--user', AZURE_USER, '--database', 'orders', '--json']);
  t.equal(code, 0, stderr);
  const report = JSON.parse(stdout) as { ok: boolean; checks: Array<{ id: string; status: string; found: string }> };
  t.equal(report.ok, true);
  t.same(
    report.checks.map((c) => [c.id, c.status]),
    [
      ['credentials', 'pass'],
      ['endpoint', 'pass'],
      ['tcp', 'pass'],
      ['tls', 'pass'],
      ['certificate', 'pass'],
      ['login', 'pass'],
      ['pooling', 'pass'],
    ],
  );
  t.match(report.checks[0]!.found, /DefaultAzureCredential: a token for alice@example\.com, tenant /);
  noTokenIn(t, stdout + stderr, 'the report');
});

t.test('doctor, Azure: a refused token gets the Entra causes, one per line', async (t) => {
  const { code, stdout } = await cli(['doctor', ...azure, '--user', 'iam_user', '--database', 'orders']);
  t.equal(code, 1);
  t.match(
    stdout,
    /WARN {2}Server name and user\n {6}mydb\.postgres\.database\.azure\.com is an Azure server name; the user "iam_user" is not the token's principal \(alice@example\.com\)/,
  );
  t.match(stdout, /FAIL {2}Login\n {6}the server rejected the access token: PAM authentication failed/);
  t.match(stdout, /fix: 1\) the role was created for this principal .*pgaadauth_create_principal\('iam_user', false, false\)/);
  t.match(stdout, /\n {11}2\) The user name is the principal's name exactly, case included/);
  t.match(stdout, /Stopped at: Login\./);
  noTokenIn(t, stdout, 'the report');
});

t.test('doctor, Cloud SQL: the API describes the instance, and the login succeeds', async (t) => {
  const { code, stdout, stderr } = await cli(['doctor', ...gcp, '--user', GCP_USER, '--database', 'orders', '--json']);
  t.equal(code, 0, stderr);
  const report = JSON.parse(stdout) as { ok: boolean; checks: Array<{ id: string; status: string; found: string }> };
  t.same(
    report.checks.map((c) => [c.id, c.status]),
    [
      ['credentials', 'pass'],
      ['endpoint', 'pass'],
      ['instance', 'pass'],
      ['tcp', 'pass'],
      ['tls', 'pass'],
      ['certificate', 'pass'],
      ['login', 'pass'],
      ['pooling', 'pass'],
    ],
  );
  t.match(report.checks[0]!.found, /Application Default Credentials: an access token for app-sa@my-project\.iam\.gserviceaccount\.com/);
  t.match(
    report.checks[2]!.found,
    /POSTGRES_15 in us-central1; address 127\.0\.0\.1; server CA GOOGLE_MANAGED_CAS_CA; the certificate must name myinstance\.abc123def/,
  );
  noTokenIn(t, stdout + stderr, 'the report');
});

t.test('doctor, Cloud SQL: the suffix left on fails at once; a refused token gets the Cloud SQL causes', async (t) => {
  const suffix = await cli(['doctor', ...gcp, '--user', `${GCP_USER}.gserviceaccount.com`]);
  t.equal(suffix.code, 1);
  t.match(suffix.stdout, /FAIL {2}Connection name and user\n {6}Cloud SQL IAM user names leave off \.gserviceaccount\.com/);
  const refused = await cli(['doctor', ...gcp, '--user', 'iam_user', '--database', 'orders']);
  t.equal(refused.code, 1);
  t.match(refused.stdout, /WARN {2}Connection name and user\n.*is not the credentials' account's \(app-sa@my-project\.iam\)/);
  t.match(
    refused.stdout,
    /fix: 1\) IAM database authentication is on: gcloud sql instances patch myinstance --database-flags=cloudsql\.iam_authentication=on/,
  );
  t.match(refused.stdout, /4\) The principal has roles\/cloudsql\.instanceUser/);
});

t.test('doctor, Cloud SQL: an instance the API does not know', async (t) => {
  const { code, stdout } = await cli([
    'doctor',
    `my-project:us-central1:nosuch:${db.port}`,
    '--sqladmin-api-endpoint',
    api.origin,
    '--user',
    GCP_USER,
  ]);
  t.equal(code, 1);
  t.match(stdout, /FAIL {2}Cloud SQL instance \(SQL Admin API\)\n.*did not describe my-project:us-central1:nosuch/);
  t.match(stdout, /fix: No instance nosuch in project my-project/);
});

t.test('doctor, Azure: no credentials say where to get them', async (t) => {
  const { code, stdout } = await cli(['doctor', ...azure, '--user', AZURE_USER], { IDENTITY_ENDPOINT: `${msi.origin}/msi/broken` });
  t.equal(code, 1);
  t.match(stdout, /FAIL {2}Azure credentials \(DefaultAzureCredential\)\n {6}DefaultAzureCredential gave no token: /);
  t.match(stdout, /fix: Make `az account get-access-token --scope https:\/\/ossrdbms-aad\.database\.windows\.net\/\.default` work here/);
});

t.test('run: psql through the proxy as the Entra principal', async (t) => {
  const { code, stdout, stderr } = await cli([
    'run',
    ...azure,
    '--user',
    AZURE_USER,
    '--',
    'psql',
    '-X',
    '-At',
    '-d',
    'orders',
    '-c',
    'SELECT current_user',
  ]);
  t.equal(code, 0, stderr);
  t.equal(stdout, `${AZURE_USER}\n`);
  noTokenIn(t, stdout + stderr, 'the output');
});

t.test('run: psql through the proxy to Cloud SQL, the cloud told by PG_IAM_PROXY_CLOUD for a name that does not tell', async (t) => {
  // The connection name says gcp already; --cloud gcp agrees (a contradiction is the user's to make).
  const { code, stdout, stderr } = await cli(
    ['run', ...gcp, '--user', GCP_USER, '--', 'psql', '-X', '-At', '-d', 'orders', '-c', 'SELECT current_user'],
    {
      PG_IAM_PROXY_CLOUD: 'gcp',
    },
  );
  t.equal(code, 0, stderr);
  t.equal(stdout, `${GCP_USER}\n`);
});

t.test('serve: SIGHUP adds an Azure instance to an AWS one; its token is fetched then, and /readyz and /metrics count it', async (t) => {
  const [aws, az, http] = [await closedPort(), await closedPort(), await closedPort()];
  const file = join(home, 'reload.yaml');
  const instance = (endpoint: string, port: number) => [
    `  - endpoint: ${endpoint}`,
    `    connectTo: 127.0.0.1:${db.port}`,
    `    caFile: ${db.caFile}`,
    `    listen: 127.0.0.1:${port}`,
  ];
  const write = (...instances: string[][]) =>
    writeFileSync(file, ['log: { format: json }', 'instances:', ...instances.flat(), ''].join('\n'));
  write(instance(`${db.endpoint}:${db.port}`, aws));
  const cli = await startCli(['--config', file, '--http', `127.0.0.1:${http}`], {
    ...env,
    AWS_ACCESS_KEY_ID: db.key.accessKeyId,
    AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey,
    AWS_ENDPOINT_URL_STS: 'http://127.0.0.1:9',
    AWS_CONFIG_FILE: join(home, 'none'),
    AWS_SHARED_CREDENTIALS_FILE: join(home, 'none'),
  });
  t.teardown(() => void cli.child.kill('SIGKILL'));
  const fetched = msi.count();
  write(instance(`${db.endpoint}:${db.port}`, aws), instance(`${AZURE_ENDPOINT}:${db.port}`, az));
  cli.child.kill('SIGHUP');
  await cli.line((l) => l.msg === 'configuration reloaded');
  await cli.line((l) => l.msg === 'access tokens from DefaultAzureCredential');
  t.equal(msi.count(), fetched + 1, 'the new cloud fetched its token at the reload');
  const client = new pg.Client({ host: '127.0.0.1', port: az, user: AZURE_USER, database: 'orders' });
  await client.connect();
  t.same((await client.query('SELECT current_user AS u')).rows, [{ u: AZURE_USER }]);
  await client.end();
  const ready = (await (await fetch(`http://127.0.0.1:${http}/readyz`)).json()) as {
    credentials: Array<{ identity: string; ok: boolean }>;
  };
  t.same(
    ready.credentials.map((c) => [c.identity, c.ok]),
    [
      ['#1', true],
      ['azure', true],
    ],
    'the AWS identity by number, the Azure token by its cloud',
  );
  const metrics = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
  t.match(metrics, /pg_iam_proxy_credential_refreshes_total\{identity="azure"\} 1/);
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
  noTokenIn(t, JSON.stringify(cli.lines), 'the log');
});
