// Azure Database for PostgreSQL with Entra ID tokens, end to end: the real @azure/identity
// DefaultAzureCredential reaches a loopback App Service managed identity endpoint (and nothing else), the
// proxy logs in to the real PostgreSQL, whose PAM checker accepts the token only for the right principal
// and audience. Through psql and node-postgres; one fetch for a burst; a refused token explained in Azure's
// words; another server's certificate refused. (Renewal and the 7 KB token: azure-renewal.test.ts, since
// MSAL keeps one managed identity token cache per process.)
import t from 'tap';
import pg from 'pg';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { AZURE_ENDPOINT, AZURE_USER, startTestDb } from './support/testdb.js';
import { AZURE_ENV, AzureIdentityStandIn, jwtClaimsOf, noTokenIn as noIssuedToken, onlyCloudEnv } from './support/oauth.js';
import { startCloudProxy } from './support/cloud-proxy.js';
import { runPg } from './support/proxy.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const msi = await new AzureIdentityStandIn(db.jwtKey, AZURE_USER).start();
t.teardown(() => msi.close());
// The SDK reads process.env: the stand-in's endpoint and nothing else of Azure's (no IMDS probe, no CLI
// login in HOME, no proxy).
onlyCloudEnv(AZURE_ENV, msi.env());

const endpoint = `${AZURE_ENDPOINT}:${db.port}`;
const viaLoopback = { endpoint, connectTo: `127.0.0.1:${db.port}`, caFile: db.caFile };

/** Tokens were issued, and none of them (nor its signature) is in `text`. */
function noTokenIn(t: { ok: (v: unknown, m: string) => unknown; notOk: (v: unknown, m: string) => unknown }, text: string, what: string) {
  t.ok(msi.tokens.length > 0, 'tokens were issued');
  noIssuedToken(t, msi.tokens, text, what);
}

const proxy = await startCloudProxy({ ...viaLoopback, cloud: undefined });
t.teardown(() => proxy.close());

t.test('the endpoint name tells the cloud: Azure, with Entra ID tokens', async (t) => {
  t.equal(proxy.proxy.instances[0]!.config.cloud, 'azure');
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: AZURE_USER, database: 'orders' });
  await client.connect();
  const { rows } = await client.query<{ user: string; n: string }>('SELECT current_user AS user, count(*) AS n FROM items');
  await client.end();
  t.same(rows, [{ user: AZURE_USER, n: '3' }], 'logged in as the Entra principal');
  const last = (await db.checkerLog()).at(-1)!;
  t.match(
    last,
    { user: AZURE_USER, host: 'azure', accessKeyId: AZURE_USER, ok: true, reason: 'ok' },
    'the checker verified an Entra token',
  );
  const request = msi.last({ path: '/msi/token' })!;
  t.match(request.params, { 'api-version': '2019-08-01', resource: 'https://ossrdbms-aad.database.windows.net' });
  t.equal(jwtClaimsOf(msi.tokens[0]!).aud, 'https://ossrdbms-aad.database.windows.net', 'for the scope of Azure Database for PostgreSQL');
});

t.test('psql logs in, and a burst of logins costs one token fetch', async (t) => {
  const before = msi.count();
  const psql = await runPg('psql', [
    '-X',
    '-At',
    '-h',
    '127.0.0.1',
    '-p',
    String(proxy.port),
    '-U',
    AZURE_USER,
    '-d',
    'orders',
    '-c',
    'SELECT name FROM items ORDER BY id',
  ]);
  t.equal(psql.code, 0, psql.stderr);
  t.equal(psql.stdout, 'apple\nbanana\ncherry\n');
  const clients = Array.from(
    { length: 12 },
    () => new pg.Client({ host: '127.0.0.1', port: proxy.port, user: AZURE_USER, database: 'orders' }),
  );
  await Promise.all(clients.map((c) => c.connect()));
  await Promise.all(clients.map((c) => c.end()));
  t.equal(msi.count(), before, 'no fetch beyond the held token');
  t.equal(msi.count(), 1, 'one fetch in all, for every login so far');
});

t.test('a token for another principal is refused, and the client hears why in Azure words', async (t) => {
  // iam_user is a token user in the database, but the token names alice@example.com.
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, {
    code: '28000',
    message: /PAM authentication failed/,
    detail: /Entra ID access token from DefaultAzureCredential for alice@example\.com \(tenant [0-9a-f-]+\).*as user "iam_user"/,
    hint: /pgaadauth_create_principal\('iam_user', false, false\).*case-sensitive.*ossrdbms-aad.*AZURE_TENANT_ID.*group.*Microsoft Entra authentication/,
  });
  const checked = (await db.checkerLog()).filter((e) => e.user === 'iam_user');
  t.ok(checked.length >= 1 && checked.every((e) => !e.ok && e.reason === 'principal does not match login user'), 'refused by the server');
  noTokenIn(t, JSON.stringify(err) + String(err.message) + String(err.detail) + String(err.hint), 'the client error');
});

t.test("another server's certificate is refused: the name is checked", async (t) => {
  const other = await startCloudProxy({ ...viaLoopback, endpoint: `other.postgres.database.azure.com:${db.port}` });
  t.teardown(() => other.close());
  const client = new pg.Client({ host: '127.0.0.1', port: other.port, user: AZURE_USER, database: 'orders' });
  const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, {
    code: '08001',
    message: /certificate does not match host name "other\.postgres\.database\.azure\.com"/,
    hint: /NAME\.postgres\.database\.azure\.com.*--connect-to/,
  });
});

t.test("Node's public roots trust Azure's CAs, and only them: the test CA is refused without --ca-file", async (t) => {
  const bare = await startCloudProxy({ endpoint, connectTo: `127.0.0.1:${db.port}` });
  t.teardown(() => bare.close());
  const client = new pg.Client({ host: '127.0.0.1', port: bare.port, user: AZURE_USER, database: 'orders' });
  const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, { code: '08001', message: /certificate is not trusted/, hint: /DigiCert Global Root G2 or Microsoft RSA Root CA 2017/ });
});

t.test('a --ca-file replaced at the same path is read again on reload: no token goes to a server it no longer trusts', async (t) => {
  const bundle = join(db.dir, 'azure-reload-ca.pem');
  copyFileSync(db.caFile, bundle);
  const reloading = await startCloudProxy({ ...viaLoopback, caFile: bundle });
  t.teardown(() => reloading.close());
  const login = () => new pg.Client({ host: '127.0.0.1', port: reloading.port, user: AZURE_USER, database: 'orders' }).connect();
  const before = (await db.checkerLog()).length;
  await login().then((c) => c.end());
  t.equal((await db.checkerLog()).length, before + 1, 'the bundle trusts the server: the token went');
  copyFileSync(db.otherCaFile, bundle);
  t.match(await reloading.proxy.reload(reloading.proxy.config), { unchanged: [/./] });
  const err = (await login().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, { code: '08001', message: /certificate is not trusted/ }, 'new connections verify against the new bundle');
  t.equal((await db.checkerLog()).length, before + 1, 'no token was sent');
});

t.test('no token reached the logs', async (t) => {
  noTokenIn(t, proxy.rawLogs(), 'the logs');
  const fetched = proxy.logs().filter((l) => l.msg === 'access token fetched');
  t.ok(fetched.length >= 1, 'the fetch was logged');
  t.match(fetched[0], { signer: { identity: 'DefaultAzureCredential', principal: AZURE_USER } }, 'naming the principal, not the token');
});
