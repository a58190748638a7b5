// `serve` for Cloud SQL as users run it, a process of its own whose SDKs reach only the loopback
// stand-ins: HTTPS_PROXY never carries the SQL Admin API's token to a loopback endpoint, a
// .gserviceaccount.com user is refused before anything is dialled (with --http too), and a proxy without
// credentials says so. (A file of its own: cloud-cli.test.ts is near its time limit on a busy machine.)
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import pg from 'pg';
import { startCli } from './support/cli.js';
import { closedPort } from './support/proxy.js';
import { cleanCloudEnv, GceMetadataStandIn, SqlAdminStandIn } from './support/oauth.js';
import { CLOUD_SQL_DNS, CLOUD_SQL_NAME, GCP_USER, startTestDb } from './support/testdb.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const home = mkdtempSync(join(tmpdir(), 'pg-iam-proxy-cloud-serve-'));
t.teardown(() => rmSync(home, { recursive: true, force: true }));
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

const env = cleanCloudEnv(home, metadata.env());
const gcp = [`${CLOUD_SQL_NAME}:${db.port}`, '--sqladmin-api-endpoint', api.origin];

t.test('serve, Cloud SQL: an http loopback --sqladmin-api-endpoint is never reached through HTTPS_PROXY/HTTP_PROXY', async (t) => {
  // An "HTTP proxy" that records what reaches it and forwards nothing.
  const seen: string[] = [];
  const recorder = createServer((req, res) => (seen.push(`${req.method} ${req.url}`), res.writeHead(502).end()));
  recorder.on('connect', (req: IncomingMessage, socket: Duplex) => (seen.push(`CONNECT ${req.url}`), socket.destroy()));
  recorder.listen(0, '127.0.0.1');
  await once(recorder, 'listening');
  t.teardown(() => void recorder.close());
  const proxyUrl = `http://127.0.0.1:${(recorder.address() as AddressInfo).port}`;
  const cli = await startCli([...gcp, '--listen', '127.0.0.1:0', '--log-format', 'json'], {
    ...env,
    HTTPS_PROXY: proxyUrl,
    HTTP_PROXY: proxyUrl,
    // The metadata server is the SDK's own request (gcp-metadata): NO_PROXY keeps it off the proxy, as the README says.
    NO_PROXY: metadata.origin,
  });
  t.teardown(() => void cli.child.kill('SIGKILL'));
  const before = api.count({ status: 200 });
  const client = new pg.Client({ host: '127.0.0.1', port: cli.port, user: GCP_USER, database: 'orders' });
  await client.connect();
  t.equal((await client.query('SELECT current_user AS u')).rows[0].u, GCP_USER, 'logged in');
  await client.end();
  t.equal(api.count({ status: 200 }), before + 1, 'the SQL Admin API was asked directly');
  t.same(seen, [], 'nothing reached the proxy: no Bearer token crossed it in plaintext');
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});

t.test('serve, Cloud SQL: a .gserviceaccount.com user is refused before anything is dialled, with --http or without', async (t) => {
  for (const extra of [[], ['--http', '127.0.0.1:0']]) {
    const cli = await startCli([...gcp, '--listen', '127.0.0.1:0', '--log-format', 'json', ...extra], env);
    t.teardown(() => void cli.child.kill('SIGKILL'));
    const asked = api.count();
    const checked = (await db.checkerLog()).length;
    const client = new pg.Client({ host: '127.0.0.1', port: cli.port, user: `${GCP_USER}.gserviceaccount.com`, database: 'orders' });
    const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
    t.match(
      err,
      { code: '28000', message: /Cloud SQL IAM user names leave off \.gserviceaccount\.com: log in as "app-sa@my-project\.iam"/ },
      `refused ${extra.length ? 'with' : 'without'} --http`,
    );
    t.equal(api.count(), asked, 'the SQL Admin API was not asked: nothing was dialled');
    t.equal((await db.checkerLog()).length, checked, 'and the server checked no token');
    cli.child.kill('SIGTERM');
    t.equal(await cli.exit, 0);
  }
});

t.test(
  'serve, Cloud SQL without credentials: the client is told the credentials are missing, not that the API is unreachable',
  async (t) => {
    const cli = await startCli([...gcp, '--listen', '127.0.0.1:0', '--log-format', 'json'], {
      ...env,
      GCE_METADATA_HOST: `127.0.0.1:${await closedPort()}`,
    });
    t.teardown(() => void cli.child.kill('SIGKILL'));
    const asked = api.count();
    const client = new pg.Client({ host: '127.0.0.1', port: cli.port, user: GCP_USER, database: 'orders' });
    const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
    t.match(err, {
      code: '08001',
      message: /no Google credentials to ask the SQL Admin API about my-project:us-central1:myinstance/,
      hint: /^Set up Application Default Credentials where the proxy runs.*gcloud auth application-default login/,
    });
    t.notMatch(err.hint, /reachable/, 'not an unreachable API: it was never asked');
    t.equal(api.count(), asked, 'the API was not asked');
    cli.child.kill('SIGTERM');
    t.equal(await cli.exit, 0);
  },
);
