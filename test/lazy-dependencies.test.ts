// what ships for one use loads only for it. @peculiar/x509 with tsyringe and reflect-metadata
// (the --client-tls auto certificate) stay on disk in a proxy with client TLS off, through start, a
// session and shutdown; the same trace sees them load when they are used, so the first answer is not the
// trace missing them. (Terminal logs are the proxy's own formatter, src/log-terminal.ts: nothing to load.)
import t from 'tap';
import pg from 'pg';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, cleanAwsEnv, startCli } from './support/cli.js';
import { closedPort } from './support/proxy.js';
import { traceEnv, tracedModules } from './support/module-trace.js';
import { AzureIdentityStandIn, cleanCloudEnv } from './support/oauth.js';
import { AZURE_ENDPOINT, AZURE_USER, startTestDb } from './support/testdb.js';

const dir = mkdtempSync(join(tmpdir(), 'pg-iam-proxy-trace-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ENDPOINT = 'db.abc123xyz.us-east-1.rds.amazonaws.com:5432';
// AWS's documentation example key: signing works offline; nothing accepts it.
const env = cleanAwsEnv(dir, {
  AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
  AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
});

const ONLY_WHEN_USED: Record<string, RegExp> = {
  '@peculiar/x509': /\/node_modules\/@peculiar\/x509\//,
  tsyringe: /\/node_modules\/tsyringe\//,
  'reflect-metadata': /\/node_modules\/reflect-metadata\//,
};
const loaded = (modules: string[]) => Object.keys(ONLY_WHEN_USED).filter((name) => modules.some((m) => ONLY_WHEN_USED[name]!.test(m)));

/** each cloud's SDK loads only for an instance of that cloud. */
const CLOUD_SDKS: Record<string, RegExp> = {
  '@azure/identity': /\/node_modules\/@azure\/identity\//,
  '@azure/msal-node': /\/node_modules\/@azure\/msal-node\//,
  'google-auth-library': /\/node_modules\/google-auth-library\//,
  gaxios: /\/node_modules\/gaxios\//,
};
const sdks = (modules: string[]) => Object.keys(CLOUD_SDKS).filter((name) => modules.some((m) => CLOUD_SDKS[name]!.test(m)));

/** One client session that fails upstream (nothing listens there): the session path runs end to end. */
async function failedSession(port: number, ssl: boolean): Promise<string | undefined> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port,
    user: 'iam_user',
    database: 'orders',
    ssl: ssl ? { rejectUnauthorized: false } : false,
  });
  client.on('error', () => undefined);
  return client.connect().then(
    () => 'connected',
    (err: pg.DatabaseError) => err.code,
  );
}

t.test('serve with --client-tls off does not load the x509 code', async (t) => {
  const trace = join(dir, 'json-off.trace');
  const upstream = await closedPort();
  const cli = await startCli(
    ['serve', ENDPOINT, '--listen', '127.0.0.1:0', '--connect-to', `127.0.0.1:${upstream}`, '--client-tls', 'off', '--log-format', 'json'],
    traceEnv(trace, env),
  );
  t.equal(await failedSession(cli.port, false), '08001', 'a session ran (and failed upstream)');
  await cli.line((l) => l.msg === 'session failed');
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
  const modules = await tracedModules(trace);
  t.ok(
    modules.some((m) => m.endsWith('/node_modules/pino/pino.js')),
    'the trace saw the CommonJS modules loaded',
  );
  t.ok(
    modules.some((m) => m.endsWith('/build/src/proxy/session.js')),
    'and the ES modules',
  );
  t.same(loaded(modules), [], 'none of the packages loaded only when used');
  t.same(sdks(modules), [], "an AWS proxy loads neither Azure's nor Google's SDK");
});

t.test("an Azure proxy loads Azure's SDK for its first token, and nothing of Google's", async (t) => {
  const db = await startTestDb();
  t.teardown(() => db.destroy());
  const msi = await new AzureIdentityStandIn(db.jwtKey, AZURE_USER).start();
  t.teardown(() => msi.close());
  const trace = join(dir, 'azure.trace');
  const cli = await startCli(
    [
      `${AZURE_ENDPOINT}:${db.port}`,
      '--listen',
      '127.0.0.1:0',
      '--connect-to',
      `127.0.0.1:${db.port}`,
      '--ca-file',
      db.caFile,
      '--client-tls',
      'off',
      '--log-format',
      'json',
    ],
    traceEnv(trace, cleanCloudEnv(dir, msi.env())),
  );
  const client = new pg.Client({ host: '127.0.0.1', port: cli.port, user: AZURE_USER, database: 'orders' });
  await client.connect();
  await client.end();
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
  const modules = await tracedModules(trace);
  t.same(sdks(modules), ['@azure/identity', '@azure/msal-node'], "Azure's SDK, and not Google's");
  t.same(loaded(modules), [], 'nor the x509 code with --client-tls off');
});

t.test('the same trace sees them load with --log-format pretty and --client-tls auto', async (t) => {
  const trace = join(dir, 'pretty-auto.trace');
  const upstream = await closedPort();
  const child = spawn(
    process.execPath,
    [
      BIN,
      'serve',
      ENDPOINT,
      '--listen',
      '127.0.0.1:0',
      '--connect-to',
      `127.0.0.1:${upstream}`,
      '--client-tls',
      'auto',
      '--log-format',
      'pretty',
    ],
    { env: traceEnv(trace, env), stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exit = once(child, 'exit');
  // Terminal logs put the listener's address in the "listening" line as listen=HOST:PORT.
  let stderr = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stderr.on('data', (chunk) => {
      stderr += String(chunk);
      const found = /listen=127\.0\.0\.1:(\d+)/.exec(stderr);
      if (found) resolve(Number(found[1]));
    });
    void exit.then(() => reject(new Error(`exited before listening: ${stderr}`)));
  });
  t.equal(await failedSession(port, true), '08001', 'a TLS session ran (the certificate was made)');
  child.kill('SIGTERM');
  t.same(await exit, [0, null]);
  t.same(loaded(await tracedModules(trace)), Object.keys(ONLY_WHEN_USED));
});
