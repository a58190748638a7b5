// The single executable (`npm run binary`): built as a user builds it, then run under `env -i` (no PATH,
// no HOME, no Node anywhere it could look): it serves a TLS login to the test database with --http on,
// and the clouds' SDKs, loaded lazily, load from inside it (an Azure and a Cloud SQL token through the
// stand-ins). Its size and start-up are measured and reported, not asserted.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { serveArgs, startCli } from './support/cli.js';
import { runPg } from './support/proxy.js';
import { AZURE_ENDPOINT, AZURE_USER, CLOUD_SQL_NAME, GCP_USER, startTestDb } from './support/testdb.js';
import { startSts } from './support/aws/sts.js';
import { AzureIdentityStandIn, GceMetadataStandIn, LOGIN_SCOPE } from './support/oauth.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const binary = join(root, 'dist', 'pg-iam-proxy-linux-x64');

/** `env -i NAME=VALUE... binary ARGS`: the environment is exactly `vars`. */
const envI = (vars: Record<string, string>, ...args: string[]) => [
  '-i',
  ...Object.entries(vars).map(([k, v]) => `${k}=${v}`),
  binary,
  ...args,
];

t.test('npm run binary: one executable that serves under env -i', async (t) => {
  const db = await startTestDb();
  t.teardown(() => db.destroy());
  const sts = await startSts();
  t.teardown(() => sts.close());
  const home = mkdtempSync(join(tmpdir(), 'pg-iam-proxy-binary-'));

  // build/ is the suite's own (npm test builds first): the script alone, as `npm run binary` runs it.
  const started = performance.now();
  const built = await run(process.execPath, [join(root, 'scripts', 'binary.mjs')], { cwd: root, maxBuffer: 16 << 20 });
  t.comment(built.stdout.trim().split('\n').at(-1)!);
  t.comment(`built in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  t.ok(statSync(binary).mode & 0o100, 'an executable file');

  // Nothing of this machine's configuration: the files the SDKs would read are named and absent.
  const aws = {
    AWS_ACCESS_KEY_ID: db.key.accessKeyId,
    AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey,
    AWS_ENDPOINT_URL_STS: sts.url,
    AWS_CONFIG_FILE: join(home, 'none'),
    AWS_SHARED_CREDENTIALS_FILE: join(home, 'none'),
    AWS_EC2_METADATA_DISABLED: 'true',
  };
  const version = await run('/usr/bin/env', envI({}, '--version'), { env: {} });
  t.match(version.stdout.trim(), /^\d+\.\d+\.\d+/, 'the package version, written into the executable');

  const spawned = performance.now();
  const cli = await startCli(envI(aws, ...serveArgs(db, '--http', '127.0.0.1:0')), {}, '/usr/bin/env');
  t.comment(`start to listening: ${Math.round(performance.now() - spawned)} ms (spawn, Node, the bundle, the listener)`);
  // sslmode=require: the certificate made at start (the lazily loaded x509 code) is in the bundle too.
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(cli.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
    PGSSLMODE: 'require',
  });
  t.equal(r.stdout.trim(), 'iam_user|t', `a login through the executable: ${r.stderr}`);
  const http = String((await cli.line((l) => l.msg === 'health and metrics listening')).http);
  await cli.line((l) => l.msg === 'AWS identity ready');
  const ready = await fetch(`http://${http}/readyz`);
  t.equal(ready.status, 200, 'the metrics and HTTP code loaded');
  t.match(await (await fetch(`http://${http}/metrics`)).text(), /pg_iam_proxy_connections_total\{[^}]*\} 1/);
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);

  // Azure's and Google's SDKs, each loaded on first use, from inside the executable.
  const msi = await new AzureIdentityStandIn(db.jwtKey, AZURE_USER).start();
  t.teardown(() => msi.close());
  const azure = await run('/usr/bin/env', envI(msi.env(), 'token', AZURE_ENDPOINT, '--user', AZURE_USER), { env: {} });
  t.ok(azure.stdout === `${msi.tokens.at(-1)}\n`, 'an Entra ID token through @azure/identity');
  const metadata = await new GceMetadataStandIn(db.jwtKey, `${GCP_USER}.gserviceaccount.com`).start();
  t.teardown(() => metadata.close());
  const google = await run(
    '/usr/bin/env',
    envI({ ...metadata.env(), CLOUDSDK_CONFIG: join(home, 'gcloud') }, 'token', CLOUD_SQL_NAME, '--user', GCP_USER),
    { env: {} },
  );
  t.ok(google.stdout === `${metadata.tokens.at(-1)}\n`, 'a Cloud SQL login token through google-auth-library');
  t.equal(metadata.tokenRequests(LOGIN_SCOPE), 1);
});
