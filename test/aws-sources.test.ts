// Every AWS credential source, through the real SDK inside the real CLI: loopback stand-ins for IMDSv2,
// the ECS container endpoint and STS; shared files with static keys, role profiles and credential_process.
// The test database's checker records which access key signed each login; the stand-ins count fetches.
import t from 'tap';
import pg from 'pg';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN, cleanAwsEnv, serveArgs, startCli, type StartedCli } from './support/cli.js';
import { startTestDb, type AwsKey } from './support/testdb.js';
import { runPg } from './support/proxy.js';
import { startEcs } from './support/aws/container.js';
import { configFile, credentialFile, credentialProcess } from './support/aws/files.js';
import { startImds } from './support/aws/imds.js';
import { makeCredentials, randomAccessKeyId, randomSecretAccessKey } from './support/aws/keys.js';
import { startSts } from './support/aws/sts.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const sts = await startSts();
t.teardown(() => sts.close());

const ROLE = 'arn:aws:iam::123456789012:role/orders-db';
const LOGINS = 20;
let fileNo = 0;

/** A credential set the test database trusts. */
async function trusted(lifetimeMs = 3_600_000): Promise<AwsKey & { expiration: Date; sessionToken: string }> {
  const creds = makeCredentials({}, lifetimeMs);
  await db.trustKey(creds);
  return creds;
}

/** Make STS issue `creds` next, for the database to trust. */
async function stsIssues(creds: AwsKey & { sessionToken: string; expiration: Date }) {
  sts.issue(creds);
}

function env(extra: Record<string, string>): NodeJS.ProcessEnv {
  return cleanAwsEnv(db.dir, { AWS_ENDPOINT_URL_STS: sts.url, ...extra });
}

async function serve(environment: NodeJS.ProcessEnv, args: string[] = []): Promise<StartedCli> {
  const cli = await startCli(serveArgs(db, ...args), environment);
  t.teardown(async () => {
    if (cli.child.exitCode === null) {
      cli.child.kill('SIGKILL');
      await cli.exit;
    }
  });
  return cli;
}

async function stop(cli: StartedCli): Promise<number | null> {
  cli.child.kill('SIGTERM');
  return cli.exit;
}

/** Fresh logins through the proxy (pgbench -C); returns the access keys that signed them. */
async function burst(cli: StartedCli, logins = LOGINS): Promise<string[]> {
  const from = (await db.checkerLog()).length;
  const script = join(db.dir, 'one.sql');
  await writeFile(script, 'SELECT 1;\n');
  const r = await runPg('pgbench', ['-n', '-C', '-c', '4', '-j', '2', '-t', String(logins / 4), '-f', script], {
    PGHOST: '127.0.0.1',
    PGPORT: String(cli.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  if (r.code !== 0) throw new Error(`pgbench: ${r.stderr}`);
  const entries = (await db.checkerLog()).slice(from);
  // pgbench makes one connection of its own before the benchmark's.
  return entries
    .filter((e) => e.ok)
    .map((e) => e.accessKeyId)
    .slice(1);
}

const ready = (cli: StartedCli) => cli.line((l) => l.msg === 'AWS identity ready' || String(l.msg).startsWith('no AWS credentials yet'));

t.test('EC2 instance metadata (IMDSv2): one fetch for two hundred logins', async (t) => {
  const imds = await startImds();
  t.teardown(() => imds.close());
  const creds = await trusted();
  imds.issue(creds);
  sts.identities.set(creds.accessKeyId, {
    arn: 'arn:aws:sts::123456789012:assumed-role/stand-in-role/i-0abc',
    userId: 'AROA:i-0abc',
    account: '123456789012',
  });
  const cli = await serve(env({ AWS_EC2_METADATA_DISABLED: 'false', AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.origin }));
  t.match(await ready(cli), {
    msg: 'AWS identity ready',
    source: 'EC2 instance metadata (IMDSv2)',
    accessKeyId: creds.accessKeyId,
    arn: /assumed-role\/stand-in-role/,
    account: '123456789012',
  });
  const keys = await burst(cli, 200);
  t.equal(keys.length, 200);
  t.ok(
    keys.every((k) => k === creds.accessKeyId),
    'every token signed with the instance role',
  );
  t.equal(
    imds.count((r) => r.path.includes('security-credentials/') && r.status === 200 && r.issued !== undefined),
    1,
    'credentials fetched once',
  );
  t.ok(imds.count({ method: 'PUT' }) >= 1, 'IMDSv2 session token asked');
  t.equal(await stop(cli), 0);
});

t.test('ECS container endpoint with its authorization token', async (t) => {
  const ecs = await startEcs({ authorizationToken: 'stand-in-auth' });
  t.teardown(() => ecs.close());
  const creds = await trusted();
  ecs.issue(creds);
  const cli = await serve(env({ AWS_CONTAINER_CREDENTIALS_FULL_URI: ecs.url, AWS_CONTAINER_AUTHORIZATION_TOKEN: 'stand-in-auth' }));
  t.match(await ready(cli), { source: 'the container credentials endpoint (ECS, EKS Pod Identity)', accessKeyId: creds.accessKeyId });
  const keys = await burst(cli);
  t.ok(keys.length === LOGINS && keys.every((k) => k === creds.accessKeyId));
  t.equal(ecs.count({ status: 200 }), 1, 'credentials fetched once');
  t.equal(ecs.count({ status: 401 }), 0);
  t.equal(await stop(cli), 0);
});

t.test('web identity (EKS IRSA): AssumeRoleWithWebIdentity once', async (t) => {
  const tokenFile = join(db.dir, 'web-identity-token');
  await writeFile(tokenFile, 'eyJ.stand-in.jwt');
  const creds = await trusted();
  await stsIssues(creds);
  const before = sts.count({ action: 'AssumeRoleWithWebIdentity' });
  const cli = await serve(
    env({ AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile, AWS_ROLE_ARN: ROLE, AWS_ROLE_SESSION_NAME: 'pod-1', AWS_REGION: 'us-east-1' }),
  );
  t.match(await ready(cli), { source: /web identity token/, accessKeyId: creds.accessKeyId });
  const keys = await burst(cli);
  t.ok(keys.length === LOGINS && keys.every((k) => k === creds.accessKeyId));
  t.equal(sts.count({ action: 'AssumeRoleWithWebIdentity' }) - before, 1);
  t.match(sts.last({ action: 'AssumeRoleWithWebIdentity' })?.params, {
    RoleArn: ROLE,
    RoleSessionName: 'pod-1',
    WebIdentityToken: 'eyJ.stand-in.jwt',
  });
  t.equal(await stop(cli), 0);
});

t.test('--profile with static keys in the shared credentials file', async (t) => {
  const key = { accessKeyId: randomAccessKeyId('AKIA'), secretAccessKey: randomSecretAccessKey() };
  await db.trustKey(key);
  const files = join(db.dir, `aws-${++fileNo}`);
  const credentials = credentialFile(files, { app: { aws_access_key_id: key.accessKeyId, aws_secret_access_key: key.secretAccessKey } });
  const cli = await serve(
    env({ AWS_SHARED_CREDENTIALS_FILE: credentials, AWS_ACCESS_KEY_ID: 'AKIAIGNOREDBECAUSEPROFILE', AWS_SECRET_ACCESS_KEY: 'x' }),
    ['--profile', 'app'],
  );
  t.match(await ready(cli), { identity: 'profile app', source: 'the shared credentials file', accessKeyId: key.accessKeyId });
  const keys = await burst(cli);
  t.ok(keys.length === LOGINS && keys.every((k) => k === key.accessKeyId), 'the profile wins over the environment');
  t.equal(await stop(cli), 0);
});

t.test('a role profile (role_arn + source_profile): the base key assumes the role once', async (t) => {
  const base = { accessKeyId: randomAccessKeyId('AKIA'), secretAccessKey: randomSecretAccessKey() };
  const role = await trusted();
  await stsIssues(role);
  const files = join(db.dir, `aws-${++fileNo}`);
  const credentials = credentialFile(files, { base: { aws_access_key_id: base.accessKeyId, aws_secret_access_key: base.secretAccessKey } });
  const config = configFile(files, { db: { role_arn: ROLE, source_profile: 'base', role_session_name: 'laptop', region: 'us-east-1' } });
  const before = sts.count({ action: 'AssumeRole' });
  const cli = await serve(env({ AWS_SHARED_CREDENTIALS_FILE: credentials, AWS_CONFIG_FILE: config, AWS_PROFILE: 'db' }));
  t.match(await ready(cli), { source: 'a role profile (role_arn with source_profile)', accessKeyId: role.accessKeyId });
  const keys = await burst(cli);
  t.ok(keys.length === LOGINS && keys.every((k) => k === role.accessKeyId), 'tokens signed by the assumed role');
  t.equal(sts.count({ action: 'AssumeRole' }) - before, 1);
  t.match(sts.last({ action: 'AssumeRole' }), { accessKeyId: base.accessKeyId, params: { RoleArn: ROLE, RoleSessionName: 'laptop' } });
  t.equal(await stop(cli), 0);
});

t.test('credential_process: run once', async (t) => {
  const creds = await trusted();
  const files = join(db.dir, `aws-${++fileNo}`);
  const proc = credentialProcess(files, creds);
  const config = configFile(files, { tool: { credential_process: proc.command } });
  const cli = await serve(env({ AWS_CONFIG_FILE: config }), ['--profile', 'tool']);
  t.match(await ready(cli), { source: 'credential_process', accessKeyId: creds.accessKeyId });
  const keys = await burst(cli);
  t.ok(keys.length === LOGINS && keys.every((k) => k === creds.accessKeyId));
  t.equal(proc.count(), 1);
  t.equal(await stop(cli), 0);
});

t.test('--role-arn with --external-id and --role-session-name, assumed from environment keys', async (t) => {
  const base = { accessKeyId: randomAccessKeyId('AKIA'), secretAccessKey: randomSecretAccessKey() };
  const role = await trusted();
  await stsIssues(role);
  const before = sts.count({ action: 'AssumeRole' });
  const cli = await serve(env({ AWS_ACCESS_KEY_ID: base.accessKeyId, AWS_SECRET_ACCESS_KEY: base.secretAccessKey }), [
    '--role-arn',
    ROLE,
    '--external-id',
    'tenant-42',
    '--role-session-name',
    'orders-proxy',
  ]);
  t.match(await ready(cli), {
    identity: `role ${ROLE} assumed from the default credential chain`,
    source: `${ROLE} assumed from environment variables (AWS_ACCESS_KEY_ID)`,
    accessKeyId: role.accessKeyId,
  });
  const keys = await burst(cli);
  t.ok(keys.length === LOGINS && keys.every((k) => k === role.accessKeyId));
  t.equal(sts.count({ action: 'AssumeRole' }) - before, 1);
  t.match(sts.last({ action: 'AssumeRole' }), {
    accessKeyId: base.accessKeyId,
    signingRegion: 'us-east-1',
    params: { RoleArn: ROLE, ExternalId: 'tenant-42', RoleSessionName: 'orders-proxy' },
  });
  t.equal(await stop(cli), 0);
});

t.test('a role the base identity may not assume: the client hears STS, the proxy keeps serving', async (t) => {
  let denied = true;
  const strict = await startSts({
    reject: (r) =>
      denied && r.action === 'AssumeRole'
        ? { code: 'AccessDenied', message: 'User is not authorized to perform: sts:AssumeRole' }
        : undefined,
  });
  t.teardown(() => strict.close());
  const role = await trusted();
  strict.issue(role);
  const cli = await serve(
    env({ AWS_ENDPOINT_URL_STS: strict.url, AWS_ACCESS_KEY_ID: randomAccessKeyId('AKIA'), AWS_SECRET_ACCESS_KEY: randomSecretAccessKey() }),
    ['--role-arn', ROLE],
  );
  t.match(await ready(cli), {
    msg: /^no AWS credentials/,
    tried: /sts:AssumeRole arn:aws:iam::123456789012:role\/orders-db \(User is not authorized/,
  });
  const client = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders' });
  const err = await client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, {
    code: '08001',
    message: /no AWS credentials for role arn:aws:iam::123456789012:role\/orders-db/,
    detail: /sts:AssumeRole .*not authorized/,
  });
  denied = false;
  await cli.line((l) => l.msg === 'AWS credentials available again'); // retried on its own, with backoff
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(cli.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(r.stdout.trim(), 'iam_user', `recovers once STS lets the role be assumed: ${r.stderr}`);
  t.equal(await stop(cli), 0);
});

t.test('credentials that expire are renewed before use; sessions opened before stay up', async (t) => {
  const imds = await startImds();
  t.teardown(() => imds.close());
  // 6 s of usable life, renewed about 3 s after the start: the first login comes well before, even on a
  // loaded machine (2 s was too close under CI load).
  const first = await trusted(66_000);
  const second = await trusted();
  imds.issue(first, second);
  const cli = await serve(env({ AWS_EC2_METADATA_DISABLED: 'false', AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.origin }), [
    '--log-level',
    'debug',
  ]);
  await ready(cli);
  const early = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders' });
  await early.connect();
  const renewed = await cli.line((l) => l.msg === 'AWS credentials fetched' && l.accessKeyId === second.accessKeyId);
  t.ok(renewed, 'the holder renewed on its own');
  const late = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders' });
  await late.connect();
  await late.end();
  const signers = (await db.checkerLog()).filter((e) => e.ok).map((e) => e.accessKeyId);
  t.equal(signers.at(-2), first.accessKeyId, 'the first session signed with the first credentials');
  t.equal(signers.at(-1), second.accessKeyId, 'the next login signed with the renewed ones');
  t.same((await early.query('SELECT 41 + 1 AS n')).rows, [{ n: 42 }], 'the earlier session was not disturbed');
  t.equal(
    imds.count((r) => r.issued !== undefined),
    2,
  );
  await early.end();
  t.equal(await stop(cli), 0);
});

t.test('the credential endpoint down: clients are told which sources were tried; recovery when it returns', async (t) => {
  const ecs = await startEcs();
  t.teardown(() => ecs.close());
  await ecs.down('refuse');
  const cli = await serve(env({ AWS_CONTAINER_CREDENTIALS_FULL_URI: ecs.url }));
  t.match(await ready(cli), { msg: /^no AWS credentials yet/, tried: /the ECS\/EKS container endpoint/ });
  const client = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders' });
  const err = await client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, {
    code: '08001',
    message: /no AWS credentials for the default credential chain/,
    detail: /environment variables .*the ECS\/EKS container endpoint/,
  });
  ecs.issue(await trusted());
  await ecs.up();
  await cli.line((l) => l.msg === 'AWS credentials available again');
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(cli.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(r.stdout.trim(), '1', r.stderr);
  t.equal(await stop(cli), 0);
});

t.test('MFA: a role that needs a code asks on the terminal, and fails clearly without one', async (t) => {
  const mfa = await startSts({ mfaTokenCode: '246810' });
  t.teardown(() => mfa.close());
  const base = { accessKeyId: randomAccessKeyId('AKIA'), secretAccessKey: randomSecretAccessKey() };
  const files = join(db.dir, `aws-${++fileNo}`);
  const credentials = credentialFile(files, { base: { aws_access_key_id: base.accessKeyId, aws_secret_access_key: base.secretAccessKey } });
  const config = configFile(files, {
    admin: { role_arn: ROLE, source_profile: 'base', mfa_serial: 'arn:aws:iam::123456789012:mfa/alice' },
  });
  const environment = env({ AWS_ENDPOINT_URL_STS: mfa.url, AWS_SHARED_CREDENTIALS_FILE: credentials, AWS_CONFIG_FILE: config });

  // No terminal (stdin is not a TTY): the proxy says why there are no credentials.
  const headless = await serve(environment, ['--profile', 'admin']);
  t.match(await ready(headless), { tried: /MFA code is needed for arn:aws:iam::123456789012:mfa\/alice, but there is no terminal/ });
  t.equal(await stop(headless), 0);

  // On a terminal (script(1) gives it one): the prompt appears, the code goes to STS.
  const role = await trusted();
  mfa.issue(role);
  const args = [BIN, ...serveArgs(db, '--profile', 'admin')];
  const tty = spawn('script', ['-qefc', `exec ${[process.execPath, ...args].map(shellQuote).join(' ')}`, '/dev/null'], {
    env: environment,
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  t.teardown(() => void tty.kill('SIGKILL'));
  let screen = '';
  const watchers = new Set<() => void>();
  tty.stdout.on('data', (d: Buffer) => {
    screen += String(d);
    for (const check of watchers) check();
  });
  const seen = (pattern: RegExp) =>
    new Promise<RegExpExecArray>((resolve) => {
      const check = () => {
        const m = pattern.exec(screen);
        if (m) {
          watchers.delete(check);
          resolve(m);
        }
      };
      watchers.add(check);
      check();
    });
  await seen(/MFA code for arn:aws:iam::123456789012:mfa\/alice: /);
  tty.stdin.write('246810\n');
  const port = Number((await seen(/"listen":"127\.0\.0\.1:(\d+)"[^\n]*"msg":"listening"/))[1]);
  await seen(/"msg":"AWS identity ready"/);
  t.match(mfa.last({ action: 'AssumeRole' })?.params, {
    RoleArn: ROLE,
    SerialNumber: 'arn:aws:iam::123456789012:mfa/alice',
    TokenCode: '246810',
  });
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(r.stdout.trim(), 'iam_user', r.stderr);
  t.ok(await seen(/each renewal asks for a new MFA code on the terminal/), 'the user is warned that renewal needs them');
  tty.kill('SIGTERM');
  await once(tty, 'exit');
});

const shellQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
