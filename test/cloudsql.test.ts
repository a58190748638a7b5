// Cloud SQL with IAM database authentication, end to end: the real google-auth-library reaches a loopback
// metadata server (GCE_METADATA_HOST, and nothing else) for tokens, the proxy asks a loopback SQL Admin
// API (connect.get) for the instance's address, server CA and DNS name, and logs in to the real
// PostgreSQL, whose PAM checker accepts the token only for the right principal and scope.
import t from 'tap';
import pg from 'pg';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TLSSocket } from 'node:tls';
import { CLOUD_SQL_DNS, CLOUD_SQL_NAME, GCP_USER, startTestDb } from './support/testdb.js';
import {
  ADMIN_SCOPE,
  GceMetadataStandIn,
  GOOGLE_ENV,
  LOGIN_SCOPE,
  noTokenIn as noIssuedToken,
  onlyCloudEnv,
  SqlAdminStandIn,
} from './support/oauth.js';
import { startCloudProxy } from './support/cloud-proxy.js';
import { resolveInstance } from '../src/config.js';
import { runPg } from './support/proxy.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const home = mkdtempSync(join(tmpdir(), 'pg-iam-proxy-gcp-'));
t.teardown(() => rmSync(home, { recursive: true, force: true }));
const metadata = await new GceMetadataStandIn(db.jwtKey, `${GCP_USER}.gserviceaccount.com`).start();
t.teardown(() => metadata.close());
const api = await new SqlAdminStandIn(db.jwtKey).start();
t.teardown(() => api.close());
// The library reads process.env: this metadata server and nothing else of Google's (no key file, no
// gcloud login in the config dir, no proxy).
onlyCloudEnv(GOOGLE_ENV, { ...metadata.env(), CLOUDSDK_CONFIG: join(home, 'gcloud') });

const CAS = { serverCaMode: 'GOOGLE_MANAGED_CAS_CA', region: 'us-central1', databaseVersion: 'POSTGRES_15' };
api.instances.set('my-project/myinstance', {
  ...CAS,
  ipAddresses: [
    { type: 'PRIVATE', ipAddress: '127.0.0.2' },
    { type: 'PRIMARY', ipAddress: '127.0.0.1' },
  ],
  serverCaCert: { cert: db.caPem },
  dnsName: `${CLOUD_SQL_DNS}.`,
});
// Another instance on the same address (a stale IP, a mix-up): its certificate would name it.
api.instances.set('my-project/other', {
  ...CAS,
  ipAddresses: [{ type: 'PRIMARY', ipAddress: '127.0.0.1' }],
  serverCaCert: { cert: db.caPem },
  dnsName: 'other.abc123def.us-central1.sql.goog',
});

/** The connection name with the test database's port (Cloud SQL's own is 5432). */
const endpoint = `${CLOUD_SQL_NAME}:${db.port}`;
const sqladminApiEndpoint = api.origin;

/** Tokens were issued, and none of them (nor its signature) is in `text`. */
function noTokenIn(t: { ok: (v: unknown, m: string) => unknown; notOk: (v: unknown, m: string) => unknown }, text: string, what: string) {
  t.ok(metadata.tokens.length > 0, 'tokens were issued');
  noIssuedToken(t, metadata.tokens, text, what);
}

const proxy = await startCloudProxy({ endpoint, sqladminApiEndpoint });
t.teardown(() => proxy.close());

t.test('a connection name is Cloud SQL: address, CA and DNS name from connect.get, a token from ADC', async (t) => {
  t.equal(proxy.proxy.instances[0]!.config.cloud, 'gcp');
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: GCP_USER, database: 'orders' });
  await client.connect();
  const { rows } = await client.query<{ user: string; n: string }>('SELECT current_user AS user, count(*) AS n FROM items');
  await client.end();
  t.same(rows, [{ user: GCP_USER, n: '3' }], 'logged in as the service account');
  t.match((await db.checkerLog()).at(-1), { user: GCP_USER, host: 'gcp', accessKeyId: `${GCP_USER}.gserviceaccount.com`, ok: true });
  t.equal(
    api.count({ path: '/sql/v1beta4/projects/my-project/instances/myinstance/connectSettings', status: 200 }),
    1,
    'connect.get asked once',
  );
  t.equal(metadata.tokenRequests(LOGIN_SCOPE), 1, 'a login token with the sqlservice.login scope');
  t.equal(metadata.tokenRequests(ADMIN_SCOPE), 1, 'and an API token with the sqlservice.admin scope, apart');
  t.same(proxy.proxy.instances[0]!.config.connectTo, proxy.proxy.instances[0]!.config.endpoint, 'no --connect-to given');
});

t.test('psql logs in, and a burst of logins costs no more fetches nor API calls', async (t) => {
  const psql = await runPg('psql', [
    '-X',
    '-At',
    '-h',
    '127.0.0.1',
    '-p',
    String(proxy.port),
    '-U',
    GCP_USER,
    '-d',
    'orders',
    '-c',
    'SELECT name FROM items ORDER BY id',
  ]);
  t.equal(psql.code, 0, psql.stderr);
  t.equal(psql.stdout, 'apple\nbanana\ncherry\n');
  const clients = Array.from(
    { length: 12 },
    () => new pg.Client({ host: '127.0.0.1', port: proxy.port, user: GCP_USER, database: 'orders' }),
  );
  await Promise.all(clients.map((c) => c.connect()));
  await Promise.all(clients.map((c) => c.end()));
  t.equal(metadata.tokenRequests(LOGIN_SCOPE), 1, 'one login token for every login');
  t.equal(api.count(), 1, 'one connect.get');
});

t.test('the .gserviceaccount.com suffix is refused before anything is dialled', async (t) => {
  const before = (await db.checkerLog()).length;
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: `${GCP_USER}.gserviceaccount.com`, database: 'orders' });
  const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, {
    code: '28000',
    message: /leave off \.gserviceaccount\.com: log in as "app-sa@my-project\.iam"/,
    hint: /user=app-sa@my-project\.iam/,
  });
  t.equal((await db.checkerLog()).length, before, 'the server saw no login');
});

t.test('a token the server refuses is explained in Cloud SQL words', async (t) => {
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, {
    code: '28000',
    message: /PAM authentication failed/,
    detail:
      /access token from Application Default Credentials \(scope https:\/\/www\.googleapis\.com\/auth\/sqlservice\.login\).*as user "iam_user" to my-project:us-central1:myinstance/,
    hint: /cloudsql\.iam_authentication=on.*gcloud sql users create iam_user --instance=myinstance --type=cloud_iam_user.*\.gserviceaccount\.com.*roles\/cloudsql\.instanceUser/,
  });
  noTokenIn(t, `${err.message} ${err.detail} ${err.hint}`, 'the client error');
});

t.test("another instance's certificate is refused: its DNS name is checked", async (t) => {
  const other = await startCloudProxy({ endpoint: `my-project:us-central1:other:${db.port}`, sqladminApiEndpoint });
  t.teardown(() => other.close());
  const client = new pg.Client({ host: '127.0.0.1', port: other.port, user: GCP_USER, database: 'orders' });
  const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, { code: '08001', message: /certificate does not match host name/, hint: /not my-project:us-central1:other's/ });
  // Refused again within the minute: the answer is not asked for again at every login (the API's quota).
  const asked = api.count();
  const again = new pg.Client({ host: '127.0.0.1', port: other.port, user: GCP_USER, database: 'orders' });
  t.match(await again.connect().catch((e: unknown) => e), { code: '08001', message: /certificate does not match host name/ });
  t.equal(api.count(), asked, 'no connect.get for the second refusal');
});

t.test('an instance the API does not know, or credentials it refuses: the API says why', async (t) => {
  const missing = await startCloudProxy({ endpoint: `my-project:us-central1:nosuch:${db.port}`, sqladminApiEndpoint });
  t.teardown(() => missing.close());
  const client = new pg.Client({ host: '127.0.0.1', port: missing.port, user: GCP_USER, database: 'orders' });
  const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, {
    code: '08001',
    message: /did not describe my-project:us-central1:nosuch/,
    hint: /No instance nosuch in project my-project/,
  });
});

t.test('a legacy instance: CN = PROJECT:INSTANCE, with --connect-to and --ca-file and no API', async (t) => {
  await db.useCertificate('cloudsql-cn');
  t.teardown(() => db.useCertificate('names'));
  const calls = api.count();
  const pinned = await startCloudProxy({ endpoint, connectTo: `127.0.0.1:${db.port}`, caFile: db.caFile, sqladminApiEndpoint });
  t.teardown(() => pinned.close());
  const client = new pg.Client({ host: '127.0.0.1', port: pinned.port, user: GCP_USER, database: 'orders' });
  await client.connect();
  t.same((await client.query('SELECT current_user AS u')).rows, [{ u: GCP_USER }]);
  await client.end();
  t.equal(api.count(), calls, 'the API was not asked');
  // Another instance's name: its CN would be my-project:other.
  const wrong = await startCloudProxy({
    endpoint: `my-project:us-central1:other:${db.port}`,
    connectTo: `127.0.0.1:${db.port}`,
    caFile: db.caFile,
    sqladminApiEndpoint,
  });
  t.teardown(() => wrong.close());
  const refused = new pg.Client({ host: '127.0.0.1', port: wrong.port, user: GCP_USER, database: 'orders' });
  const err = (await refused.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, { code: '08001', message: /certificate does not match/, detail: /CN my-project:myinstance is not my-project:other/ });
});

t.test('--ip-type: the first kind of address the instance has, in the order given; public by default', async (t) => {
  // 127.0.0.3 is loopback where nothing listens: the database is at the private address, or behind PSC
  // (its DNS name, localhost here; the certificate still names the instance's CAS DNS name).
  api.instances.set('my-project/privy', {
    ...CAS,
    ipAddresses: [
      { type: 'PRIMARY', ipAddress: '127.0.0.3' },
      { type: 'OUTGOING', ipAddress: '127.0.0.4' },
      { type: 'PRIVATE', ipAddress: '127.0.0.1' },
    ],
    serverCaCert: { cert: db.caPem },
    dnsName: CLOUD_SQL_DNS,
  });
  api.instances.set('my-project/behind-psc', {
    ...CAS,
    pscEnabled: true,
    ipAddresses: [{ type: 'PRIMARY', ipAddress: '127.0.0.3' }],
    serverCaCert: { cert: db.caPem },
    dnsName: CLOUD_SQL_DNS,
    dnsNames: [
      { name: `${CLOUD_SQL_DNS}.`, connectionType: 'PUBLIC', dnsScope: 'INSTANCE' },
      { name: 'localhost.', connectionType: 'PRIVATE_SERVICE_CONNECT', dnsScope: 'INSTANCE' },
    ],
  });
  const login = async (name: string, ipType?: string) => {
    const proxy = await startCloudProxy({ endpoint: `my-project:us-central1:${name}:${db.port}`, sqladminApiEndpoint, ipType });
    t.teardown(() => proxy.close());
    const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: GCP_USER, database: 'orders' });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query<{ u: string }>('SELECT current_user AS u');
      await client.end();
      return { user: rows[0]!.u };
    } catch (err) {
      return { error: err as pg.DatabaseError };
    }
  };
  t.match(
    await login('privy'),
    { error: { code: '08001', message: new RegExp(`127\\.0\\.0\\.3:${db.port}`) } },
    'public by default: nothing listens there',
  );
  t.same(await login('privy', 'private'), { user: GCP_USER }, 'the private address');
  t.same(await login('privy', 'psc,private,public'), { user: GCP_USER }, 'no PSC: the next in order, private');
  t.same(await login('behind-psc', 'psc'), { user: GCP_USER }, 'PSC: dialled by its DNS name (its public address is dead)');
  t.match(await login('behind-psc', 'private'), {
    error: {
      code: '08001',
      message: 'the SQL Admin API gives no private address for my-project:us-central1:behind-psc (it has public, psc)',
      hint: /--ip-type \(public, psc;/,
    },
  });
  t.throws(() => resolveInstance({ endpoint, ipType: 'public,vpn' }), {
    message: /--ip-type: "public,vpn" is not one of public, private, psc/,
  });
  t.throws(() => resolveInstance({ endpoint, ipType: 'private,private' }), { message: /names a kind of address twice/ });
  t.throws(() => resolveInstance({ endpoint, ipType: 'private', connectTo: '127.0.0.1:1' }), { message: /--ip-type and --connect-to/ });
  t.throws(() => resolveInstance({ endpoint: 'db.abc.us-east-1.rds.amazonaws.com', ipType: 'private' }), {
    message: '--ip-type is a Cloud SQL setting; db.abc.us-east-1.rds.amazonaws.com is AWS RDS/Aurora',
  });
  t.throws(() => resolveInstance({ endpoint: 'srv.postgres.database.azure.com', ipType: 'private' }), {
    message: /--ip-type is a Cloud SQL setting/,
  });
  t.same(resolveInstance({ endpoint, ipType: ' PSC , public' }).instance.cloudSql!.ipTypes, ['psc', 'public']);
});

t.test('an instance that requires client certificates: a clear error naming Google’s connector', async (t) => {
  const cert = readFileSync(join(db.dir, 'server.crt'));
  const key = readFileSync(join(db.dir, 'server.key'));
  const server = createServer((raw: Socket) => {
    raw.on('error', () => undefined);
    raw.once('data', () => {
      raw.write('S');
      // As Cloud SQL with TRUSTED_CLIENT_CERTIFICATE_REQUIRED: TLS 1.3, a certificate from its own CA demanded.
      const s = new TLSSocket(raw, { isServer: true, cert, key, requestCert: true, rejectUnauthorized: true, ca: [db.caPem] });
      s.on('error', () => undefined);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise((r) => server.close(r)));
  const port = (server.address() as { port: number }).port;
  const strict = await startCloudProxy({ endpoint, connectTo: `127.0.0.1:${port}`, sqladminApiEndpoint });
  t.teardown(() => strict.close());
  const client = new pg.Client({ host: '127.0.0.1', port: strict.port, user: GCP_USER, database: 'orders' });
  const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, {
    code: '08001',
    message: /my-project:us-central1:myinstance requires client certificates/,
    hint: /Cloud SQL Auth Proxy \(cloud-sql-proxy --auto-iam-authn my-project:us-central1:myinstance\).*--ssl-mode=ENCRYPTED_ONLY/,
  });
});

t.test('pooling works with Cloud SQL: two clients in turn, one server login', async (t) => {
  const pooled = await startCloudProxy({ endpoint, sqladminApiEndpoint, poolMode: 'session' });
  t.teardown(() => pooled.close());
  const before = (await db.checkerLog()).length;
  for (let i = 0; i < 2; i++) {
    const client = new pg.Client({ host: '127.0.0.1', port: pooled.port, user: GCP_USER, database: 'orders' });
    await client.connect();
    t.same((await client.query('SELECT count(*)::int AS n FROM items')).rows, [{ n: 3 }]);
    await client.end();
    // Back in the pool (reset) before the next client comes.
    let idle = 0;
    await pooled.line((l) => l.msg === 'pool: server idle' && ++idle === 1 + i);
  }
  t.equal((await db.checkerLog()).length, before + 1, 'the second client had the first one’s server');
});

t.test('the token is renewed before it expires, with no client waiting', async (t) => {
  metadata.lifetimeS = 272;
  t.teardown(() => void (metadata.lifetimeS = 3600));
  let refreshes = 0;
  let renewed!: () => void;
  const second = new Promise<void>((resolve) => (renewed = resolve));
  const short = await startCloudProxy({ endpoint, sqladminApiEndpoint }, { clouds: { onRefresh: () => ++refreshes === 2 && renewed() } });
  t.teardown(() => short.close());
  const before = metadata.tokenRequests(LOGIN_SCOPE);
  const client = new pg.Client({ host: '127.0.0.1', port: short.port, user: GCP_USER, database: 'orders' });
  await client.connect();
  await client.end();
  await second;
  t.equal(metadata.tokenRequests(LOGIN_SCOPE), before + 2, 'a second token, fetched in the background');
  t.ok(short.clouds.tokens('gcp').peek()!.value === metadata.tokens.at(-1), 'and held');
  const again = new pg.Client({ host: '127.0.0.1', port: short.port, user: GCP_USER, database: 'orders' });
  await again.connect();
  await again.end();
  t.ok((await db.checkerLog()).at(-1)!.ok, 'the next login uses it');
});

t.test('no token reached the logs', async (t) => {
  noTokenIn(t, proxy.rawLogs(), 'the logs');
});
