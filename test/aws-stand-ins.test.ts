// The loopback AWS credential stand-ins, driven through the real AWS SDK v3
// credential providers. Nothing here leaves 127.0.0.1: every endpoint the
// SDK could pick is pinned by env to a stand-in, and the shared config and
// credentials files are temp files.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  fromContainerMetadata,
  fromHttp,
  fromIni,
  fromInstanceMetadata,
  fromTemporaryCredentials,
  fromTokenFile,
} from '@aws-sdk/credential-providers';
import { GetCallerIdentityCommand, GetSessionTokenCommand, STSClient } from '@aws-sdk/client-sts';
import { startEcs } from './support/aws/container.js';
import { configFile, credentialFile, credentialProcess, isolateAwsEnv } from './support/aws/files.js';
import { startImds } from './support/aws/imds.js';
import { randomAccessKeyId } from './support/aws/keys.js';
import { startSts } from './support/aws/sts.js';

const dir = mkdtempSync(join(tmpdir(), 'aws-stand-ins-'));
// Every AWS_* var cleared; config/credentials point at empty temp files;
// IMDS off unless a test turns it on; a region so STS never warns/guesses.
const restoreEnv = isolateAwsEnv(dir, { AWS_REGION: 'us-west-2', AWS_EC2_METADATA_DISABLED: 'true' });
t.teardown(() => {
  restoreEnv();
  rmSync(dir, { recursive: true, force: true });
});

const STATIC_KEY = 'AKIASTANDINSTATIC001';
const STATIC_SECRET = 'S'.repeat(40);
const ROLE = 'arn:aws:iam::111122223333:role/app-role';

function stsClient(accessKeyId: string, secretAccessKey: string, sessionToken?: string): STSClient {
  return new STSClient({
    region: 'eu-west-1',
    credentials: { accessKeyId, secretAccessKey, ...(sessionToken === undefined ? {} : { sessionToken }) },
  });
}

// ---------------------------------------------------------------------------

t.test('IMDSv2 via fromInstanceMetadata', async (t) => {
  const imds = await startImds();
  t.teardown(() => imds.close());
  process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = imds.url;
  delete process.env.AWS_EC2_METADATA_DISABLED;
  t.teardown(() => {
    delete process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT;
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
  });

  const creds = await fromInstanceMetadata()();
  const issued = imds.last()?.issued;
  t.equal(creds.accessKeyId, issued?.accessKeyId);
  t.equal(creds.accessKeyId.length, 20);
  t.equal(creds.secretAccessKey.length, 40);
  t.ok((creds.sessionToken ?? '').length <= 40, 'session token kept short');
  t.equal(creds.expiration?.getTime(), issued?.expiration.getTime());
  t.same(
    imds.requests.map((r) => `${r.method} ${r.path} ${r.status}`),
    [
      'PUT /latest/api/token 200',
      'GET /latest/meta-data/iam/security-credentials/ 200',
      'GET /latest/meta-data/iam/security-credentials/stand-in-role 200',
    ],
    'the SDK asks for a token, the role name, then the role credentials',
  );

  // The token really is required: tokenless (IMDSv1) and forged-token GETs get 401.
  const role = `${imds.url}/latest/meta-data/iam/security-credentials/stand-in-role`;
  t.equal((await fetch(role)).status, 401, 'IMDSv1 GET refused');
  t.equal((await fetch(role, { headers: { 'x-aws-ec2-metadata-token': 'forged' } })).status, 401);
  t.equal((await fetch(`${imds.url}/latest/api/token`, { method: 'PUT' })).status, 400, 'PUT without ttl header');
  t.equal(imds.count({ status: 200 }), 3);
  t.equal(imds.count({ status: 401 }), 2);

  imds.issue({ accessKeyId: 'ASIAQUEUED0000000001' });
  t.equal((await fromInstanceMetadata()()).accessKeyId, 'ASIAQUEUED0000000001', 'queued set first');

  // Down: connection refused, fails fast; up() listens on the same port, so the URL the SDK was given works again.
  const url = imds.url;
  await imds.down('refuse');
  const started = Date.now();
  await t.rejects(fromInstanceMetadata()(), { message: /Unable to connect to instance metadata service/, code: 'ECONNREFUSED' });
  t.ok(Date.now() - started < 500, 'refused quickly');
  await imds.up();
  t.equal(imds.url, url);
  const again = await fromInstanceMetadata()();
  t.equal(again.accessKeyId, imds.last()?.issued?.accessKeyId);
  t.not(again.accessKeyId, 'ASIAQUEUED0000000001', 'a queued set is issued once');
});

t.test('container credentials via fromContainerMetadata and fromHttp', async (t) => {
  const ecs = await startEcs({ authorizationToken: 'Bearer ecs-secret' });
  t.teardown(() => ecs.close());
  process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = ecs.url;
  process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN = 'Bearer ecs-secret';
  t.teardown(() => {
    delete process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI;
    delete process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN;
  });
  t.match(ecs.url, /^http:\/\/127\.0\.0\.1:\d+\/creds$/);

  ecs.issue({ accessKeyId: 'ASIAECS0000000000001' }, { accessKeyId: 'ASIAECS0000000000002' });
  t.equal((await fromContainerMetadata()()).accessKeyId, 'ASIAECS0000000000001');
  t.equal((await fromHttp()()).accessKeyId, 'ASIAECS0000000000002');
  t.equal(ecs.count({ method: 'GET', path: '/creds', status: 200 }), 2, 'both carried the Authorization token');

  process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN = 'Bearer wrong';
  await t.rejects(fromContainerMetadata()(), { name: 'ProviderError', statusCode: 401 });
  await t.rejects(fromHttp({ maxRetries: 0 })(), { message: /status: 401/, Code: 'AccessDenied' });
  t.equal(ecs.count({ status: 401 }), 2, 'one request each; fromHttp retries only when maxRetries > 0');
  t.equal(
    ecs.count((r) => r.issued !== undefined),
    2,
    'nothing issued to a wrong token',
  );
});

t.test('AssumeRole via fromTemporaryCredentials', async (t) => {
  const sts = await startSts({ knownAccessKeyIds: [STATIC_KEY], mfaTokenCode: '123456' });
  t.teardown(() => sts.close());
  process.env.AWS_ENDPOINT_URL_STS = sts.url;
  t.teardown(() => delete process.env.AWS_ENDPOINT_URL_STS);

  const provider = fromTemporaryCredentials({
    masterCredentials: { accessKeyId: STATIC_KEY, secretAccessKey: STATIC_SECRET },
    params: { RoleArn: ROLE, RoleSessionName: 'sess-1', ExternalId: 'ext-9' },
    clientConfig: { region: 'eu-central-1' },
  });
  const creds = await provider();
  const rec = sts.last();
  t.equal(creds.accessKeyId, rec?.issued?.accessKeyId);
  t.match(creds.accessKeyId, /^ASIA[A-Z2-7]{16}$/);
  t.equal(creds.expiration?.getTime(), rec?.issued?.expiration.getTime(), 'Expiration round-trips');
  t.equal((rec?.issued?.expiration.getTime() ?? 1) % 1000, 0, 'default expirations are whole seconds');
  // 200 also means the request was signed for the sts service: the stand-in refuses any other scope.
  t.match(rec, {
    method: 'POST',
    path: '/',
    action: 'AssumeRole',
    accessKeyId: STATIC_KEY,
    signingRegion: 'eu-central-1',
    status: 200,
    params: { Version: '2011-06-15', RoleArn: ROLE, RoleSessionName: 'sess-1', ExternalId: 'ext-9' },
  });

  // MFA: SerialNumber + TokenCode recorded; wrong code refused.
  const mfa = (code: string) =>
    fromTemporaryCredentials({
      masterCredentials: { accessKeyId: STATIC_KEY, secretAccessKey: STATIC_SECRET },
      params: { RoleArn: ROLE, RoleSessionName: 'mfa-sess', SerialNumber: 'arn:aws:iam::111122223333:mfa/dev' },
      mfaCodeProvider: async () => code,
      clientConfig: { region: 'eu-central-1' },
    })();
  await mfa('123456');
  t.match(sts.last()?.params, { SerialNumber: 'arn:aws:iam::111122223333:mfa/dev', TokenCode: '123456' });
  await t.rejects(mfa('000000'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });

  // Unknown signer: 403 InvalidClientTokenId, not retried.
  const stranger = randomAccessKeyId('AKIA');
  await t.rejects(
    fromTemporaryCredentials({
      masterCredentials: { accessKeyId: stranger, secretAccessKey: STATIC_SECRET },
      params: { RoleArn: ROLE },
      clientConfig: { region: 'eu-central-1' },
    })(),
    { name: 'InvalidClientTokenId', $metadata: { httpStatusCode: 403, attempts: 1 } },
  );
  t.equal(sts.last()?.accessKeyId, stranger);
  t.match(sts.last()?.params.RoleSessionName, /^aws-sdk-js-\d+$/, 'SDK default session name');

  // Down: the STS client retries a refused connection (3 attempts), none of which arrive.
  await sts.down('refuse');
  const before = sts.count();
  await t.rejects(provider(), { code: 'ECONNREFUSED', $metadata: { attempts: 3 } });
  t.equal(sts.count(), before, 'refused attempts never arrive');
  await sts.up();
  t.ok((await provider()).accessKeyId.startsWith('ASIA'));
});

t.test('AssumeRoleWithWebIdentity via fromTokenFile', async (t) => {
  const sts = await startSts();
  t.teardown(() => sts.close());
  const tokenFile = join(dir, 'web-identity-token');
  writeFileSync(tokenFile, 'eyJ.web.identity');
  Object.assign(process.env, {
    AWS_ENDPOINT_URL_STS: sts.url,
    AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile,
    AWS_ROLE_ARN: ROLE,
    AWS_ROLE_SESSION_NAME: 'web-sess',
  });
  t.teardown(() => {
    for (const k of ['AWS_ENDPOINT_URL_STS', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_ARN', 'AWS_ROLE_SESSION_NAME']) delete process.env[k];
  });

  sts.issue({ accessKeyId: 'ASIAWEBID00000000001' });
  const creds = await fromTokenFile()();
  t.equal(creds.accessKeyId, 'ASIAWEBID00000000001');
  t.equal(creds.accountId, '111122223333', 'account id taken from AssumedRoleUser.Arn');
  t.match(sts.last(), {
    action: 'AssumeRoleWithWebIdentity',
    status: 200,
    params: { RoleArn: ROLE, RoleSessionName: 'web-sess', WebIdentityToken: 'eyJ.web.identity' },
  });
  t.equal(sts.last()?.accessKeyId, undefined, 'unsigned');
});

t.test('fromIni: role_arn + source_profile, mfa_serial, credential_process', async (t) => {
  const processKey = 'AKIAPROCESS000000001';
  const sts = await startSts({ knownAccessKeyIds: [STATIC_KEY, processKey] });
  t.teardown(() => sts.close());
  // A fresh directory: the SDK caches each path's contents for the process.
  const files = join(dir, 'ini');
  const proc = credentialProcess(files, { accessKeyId: processKey, secretAccessKey: 'P'.repeat(40) });
  const saved = { cfg: process.env.AWS_CONFIG_FILE, cred: process.env.AWS_SHARED_CREDENTIALS_FILE };
  process.env.AWS_SHARED_CREDENTIALS_FILE = credentialFile(files, {
    base: { aws_access_key_id: STATIC_KEY, aws_secret_access_key: STATIC_SECRET },
  });
  process.env.AWS_CONFIG_FILE = configFile(files, {
    app: { role_arn: ROLE, source_profile: 'base', role_session_name: 'ini-sess', external_id: 'ext-ini', region: 'ap-south-1' },
    mfa: { role_arn: ROLE, source_profile: 'base', mfa_serial: 'arn:aws:iam::111122223333:mfa/ini' },
    proc: { credential_process: proc.command },
    'proc-role': { role_arn: 'arn:aws:iam::111122223333:role/proc-role', source_profile: 'proc' },
  });
  process.env.AWS_ENDPOINT_URL_STS = sts.url;
  t.teardown(() => {
    process.env.AWS_CONFIG_FILE = saved.cfg;
    process.env.AWS_SHARED_CREDENTIALS_FILE = saved.cred;
    delete process.env.AWS_ENDPOINT_URL_STS;
  });
  t.match(readFileSync(process.env.AWS_CONFIG_FILE, 'utf8'), /^\[profile app\]\nrole_arn = arn:aws:iam::111122223333:role\/app-role\n/);

  const creds = await fromIni({ profile: 'app' })();
  t.equal(creds.accessKeyId, sts.last()?.issued?.accessKeyId);
  t.match(sts.last(), {
    action: 'AssumeRole',
    accessKeyId: STATIC_KEY,
    params: { RoleArn: ROLE, RoleSessionName: 'ini-sess', ExternalId: 'ext-ini', DurationSeconds: '3600' },
  });

  await fromIni({ profile: 'mfa', mfaCodeProvider: async () => '654321' })();
  t.match(sts.last()?.params, { SerialNumber: 'arn:aws:iam::111122223333:mfa/ini', TokenCode: '654321' });

  await fromIni({ profile: 'proc-role' })();
  t.equal(sts.last()?.accessKeyId, processKey, 'source credentials came from credential_process');
  t.equal(proc.count(), 1);
  t.equal(sts.count({ action: 'AssumeRole', status: 200 }), 3);
});

t.test('GetCallerIdentity and GetSessionToken through the STS client', async (t) => {
  const sts = await startSts({ knownAccessKeyIds: [STATIC_KEY] });
  t.teardown(() => sts.close());
  process.env.AWS_ENDPOINT_URL_STS = sts.url;
  t.teardown(() => delete process.env.AWS_ENDPOINT_URL_STS);

  const base = stsClient(STATIC_KEY, STATIC_SECRET);
  t.teardown(() => base.destroy());
  const me = await base.send(new GetCallerIdentityCommand({}));
  t.match(me, { Account: '123456789012', Arn: 'arn:aws:iam::123456789012:user/stand-in-user' });
  t.match(sts.last(), { action: 'GetCallerIdentity', accessKeyId: STATIC_KEY, signingRegion: 'eu-west-1', status: 200 });

  // Credentials the stand-in issued are known to it and keep their identity.
  const assumed = await fromTemporaryCredentials({
    masterCredentials: { accessKeyId: STATIC_KEY, secretAccessKey: STATIC_SECRET },
    params: { RoleArn: ROLE, RoleSessionName: 'who-am-i' },
    clientConfig: { region: 'eu-west-1' },
  })();
  const roleClient = stsClient(assumed.accessKeyId, assumed.secretAccessKey, assumed.sessionToken);
  t.teardown(() => roleClient.destroy());
  const role = await roleClient.send(new GetCallerIdentityCommand({}));
  t.equal(role.Arn, 'arn:aws:sts::111122223333:assumed-role/app-role/who-am-i');
  t.match(role.UserId, /^AROA[A-Z2-7Q]{17}:who-am-i$/);

  const session = await base.send(
    new GetSessionTokenCommand({ DurationSeconds: 900, SerialNumber: 'arn:aws:iam::123456789012:mfa/me', TokenCode: '111111' }),
  );
  t.equal(session.Credentials?.AccessKeyId, sts.last()?.issued?.accessKeyId);
  t.ok(session.Credentials?.Expiration instanceof Date);
  t.match(sts.last()?.params, { Action: 'GetSessionToken', DurationSeconds: '900', TokenCode: '111111' });

  const stranger = stsClient(randomAccessKeyId('AKIA'), STATIC_SECRET);
  t.teardown(() => stranger.destroy());
  await t.rejects(stranger.send(new GetCallerIdentityCommand({})), { name: 'InvalidClientTokenId', $metadata: { httpStatusCode: 403 } });
  t.equal(sts.count({ action: 'GetCallerIdentity' }), 3);
  t.equal(sts.count({ status: 403 }), 1, 'the stranger only');
});
