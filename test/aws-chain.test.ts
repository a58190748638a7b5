// The default credential chain rebuilt from the SDK's single providers (src/aws/chain.ts), in process
// through the real SDK: every source in the SDK's order with its reason, a named profile skipping the
// environment, SSO settings, the container endpoint (loopback stand-ins) before instance metadata, an
// error that is not "try next" ending the chain; the shell runs a step watches; the shared files read.
import t from 'tap';
import { exec } from 'node:child_process';
import { hasSubscribers } from 'node:diagnostics_channel';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHAIN_SOURCES, defaultChain } from '../src/aws/chain.js';
import { credentialProvider } from '../src/aws/provider.js';
import { configPath, credentialsPath, processProfile, profileName, sharedProfiles } from '../src/aws/profiles.js';
import { NoCredentialsError, processFailure } from '../src/aws/reasons.js';
import { ShellRuns } from '../src/aws/shell-runs.js';
import { configFile, credentialFile, isolateAwsEnv } from './support/aws/files.js';
import { startEcs } from './support/aws/container.js';
import { startImds } from './support/aws/imds.js';
import { randomAccessKeyId, randomSecretAccessKey } from './support/aws/keys.js';
import { memoryLog } from './support/memory-log.js';

/** A fresh directory for the shared files and every AWS_* variable cleared for the test; both undone after. */
function isolated(t: { teardown(fn: () => void): void }, extra: Record<string, string | undefined> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'chain-'));
  const restore = isolateAwsEnv(dir, extra);
  t.teardown(() => {
    restore();
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

async function failure(chain: () => Promise<unknown>): Promise<NoCredentialsError> {
  const err = await chain().then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof NoCredentialsError)) throw new Error(`expected a NoCredentialsError, got ${String(err)}`);
  return err;
}

t.test("nothing anywhere: every source in the SDK's order, each with its own reason", async (t) => {
  isolated(t, { AWS_EC2_METADATA_DISABLED: 'true' });
  const chain = defaultChain({}, { label: 'the default credential chain' });
  const err = await failure(() => chain());
  t.equal(err.message, 'no AWS credentials for the default credential chain: no source tried had any');
  t.same(
    err.tried.map((a) => a.source),
    [
      'environment variables',
      'SSO settings',
      'the shared config and credentials files',
      'credential_process',
      'a web identity token file',
      'the ECS/EKS container endpoint',
      'EC2 instance metadata (IMDSv2)',
    ],
    'the container endpoint comes before instance metadata, as in the SDK',
  );
  t.match(err.tried, [
    { reason: 'Unable to find environment variable credentials.' },
    { reason: /^skipped: the chain is given no SSO settings; an SSO profile is read with the shared files/ },
    { reason: /^Could not resolve credentials using profile: \[default\]/ },
    { reason: /^Profile default could not be found/ },
    { reason: 'Web identity configuration not specified' },
    { reason: 'skipped: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set' },
    { reason: 'skipped: AWS_EC2_METADATA_DISABLED is set' },
  ]);
  t.match(err.cause, { name: 'CredentialsProviderError', message: 'Could not load credentials from any providers', tryNextLink: false });
  t.notMatch(err.describeTried(), /@aws-sdk|@smithy|defaultProvider|not set in env|checking config file/, 'no SDK debug line in a reason');
});

t.test('a named profile: the environment keys are skipped, the operator told once, the profile answers', async (t) => {
  const dir = isolated(t, { AWS_EC2_METADATA_DISABLED: 'true' });
  const key = { aws_access_key_id: randomAccessKeyId('AKIA'), aws_secret_access_key: randomSecretAccessKey() };
  credentialFile(dir, { dev: key });
  const envSecret = randomSecretAccessKey();
  process.env.AWS_ACCESS_KEY_ID = randomAccessKeyId('AKIA');
  process.env.AWS_SECRET_ACCESS_KEY = envSecret;
  const { log, lines } = memoryLog('warn');

  const ghost = defaultChain({ profile: 'ghost', ignoreCache: true }, { label: 'profile ghost', log });
  const err = await failure(() => ghost());
  t.same(err.tried[0], {
    source: 'environment variables',
    reason: 'skipped: a profile is named (ghost), and a named profile comes before environment keys',
  });
  await failure(() => ghost());
  t.equal(lines().filter((l) => /are both set: the profile is used/.test(String(l.msg))).length, 1, 'warned once, not at every fetch');

  process.env.AWS_PROFILE = 'dev';
  const answered = await defaultChain({ ignoreCache: true }, { label: 'the default credential chain' })();
  t.equal(answered.credentials.accessKeyId, key.aws_access_key_id, 'AWS_PROFILE names the profile as --profile does');
  t.equal(answered.source, 'the shared credentials file');
  t.notOk(JSON.stringify(lines()).includes(envSecret), 'no secret in the log');
});

t.test('SSO settings given to the chain: its SSO source is asked, and an error that is not "try next" ends the chain', async (t) => {
  isolated(t, { AWS_EC2_METADATA_DISABLED: 'true' });
  const chain = defaultChain({ ssoStartUrl: 'https://example.awsapps.com/start' }, { label: 'sso' });
  const err = await failure(() => chain());
  t.same(
    err.tried.map((a) => a.source),
    ['environment variables', 'SSO settings'],
    'no source after it is tried',
  );
  t.match(err.tried[1]?.reason, /^Incomplete configuration/);
  t.match(err.message, /^no AWS credentials for sso: Incomplete configuration/, 'the error that ended it is the message');
  t.match(err.cause, { tryNextLink: false });
});

t.test('a role profile whose MFA code cannot be asked: the shared files source ends the chain, as in the SDK', async (t) => {
  // Without an MFA code callback the SDK's file source throws an error that is not "try next".
  const dir = isolated(t, { AWS_EC2_METADATA_DISABLED: 'true' });
  credentialFile(dir, { base: { aws_access_key_id: randomAccessKeyId('AKIA'), aws_secret_access_key: randomSecretAccessKey() } });
  configFile(dir, {
    admin: { role_arn: 'arn:aws:iam::123456789012:role/admin', source_profile: 'base', mfa_serial: 'arn:aws:iam::1:mfa/a' },
  });
  const chain = defaultChain({ profile: 'admin', ignoreCache: true }, { label: 'profile admin' });
  const err = await failure(() => chain());
  t.same(
    err.tried.map((a) => a.source),
    ['environment variables', 'SSO settings', 'the shared config and credentials files'],
  );
  t.match(err.tried.at(-1)?.reason, /^Profile admin requires multi-factor authentication, but no MFA code callback was provided/);

  // The proxy always gives a callback: without a terminal it fails, and that error ends the chain the same way.
  const headless = await failure(() => credentialProvider({ profile: 'admin' }, { region: 'us-east-1' }).provider());
  t.same(
    headless.tried.map((a) => a.source),
    ['environment variables', 'SSO settings', 'the shared config and credentials files'],
  );
  t.match(headless.tried.at(-1)?.reason, /^an MFA code is needed for arn:aws:iam::1:mfa\/a, but there is no terminal to ask on/);
  t.match(headless.message, /^no AWS credentials for profile admin: an MFA code is needed/);
});

t.test('the container endpoint set: the SDK asks it twice (fromHttp, then fromContainerMetadata), never instance metadata', async (t) => {
  const ecs = await startEcs({ authorizationToken: 'from-the-file' });
  const imds = await startImds();
  t.teardown(async () => {
    await ecs.close();
    await imds.close();
  });
  const dir = isolated(t, { AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.origin, AWS_CONTAINER_CREDENTIALS_FULL_URI: ecs.url });
  // Both token settings: the SDK warns (through the chain's logger, not the console) and reads the file.
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, 'from-the-file');
  process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN = 'from-the-variable';
  process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = tokenFile;
  const { log, lines } = memoryLog('warn');
  const chain = defaultChain({}, { label: 'the default credential chain', log });
  const answered = await chain();
  t.equal(answered.source, 'the container credentials endpoint (ECS, EKS Pod Identity)');
  t.equal(ecs.count({ status: 200 }), 1);
  t.ok(
    lines().some(
      (l) =>
        l.level === 40 && /you have set both awsContainerAuthorizationToken and awsContainerAuthorizationTokenFile/.test(String(l.msg)),
    ),
    "the SDK's warning is in the log",
  );
  t.notMatch(JSON.stringify(lines()), /from-the-file|from-the-variable/, 'no token in the log');

  // The endpoint down: both container sources fail, and instance metadata (reachable) is not asked.
  await ecs.down('refuse');
  const err = await failure(() => chain());
  t.same(
    err.tried.slice(-2).map((a) => a.source),
    [CHAIN_SOURCES.container, CHAIN_SOURCES.containerMetadata],
  );
  t.match(err.tried.at(-2)?.reason, /ECONNREFUSED/);
  t.match(err.tried.at(-1)?.reason, /Unable to connect/);
  t.equal(imds.count(), 0, 'instance metadata never asked while a container endpoint is set');
});

t.test('instance metadata that fails says what that means, with the SDK reason', async (t) => {
  const imds = await startImds();
  t.teardown(() => imds.close());
  await imds.down('refuse');
  isolated(t, { AWS_EC2_METADATA_DISABLED: 'false', AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.origin });
  const err = await failure(() => defaultChain({}, { label: 'x' })());
  t.match(err.tried.at(-1), {
    source: 'EC2 instance metadata (IMDSv2)',
    reason:
      /^no credentials from the instance metadata service: not an EC2 instance, no instance role attached, or IMDS unreachable \(Unable to connect to instance metadata service\); AWS_EC2_METADATA_DISABLED=true skips it$/,
  });
});

t.test('shell runs: an exit is seen only by the work that ran the command, and only while it runs', async (t) => {
  const run = (line: string) => new Promise<Error>((resolve) => exec(line, (e) => resolve(e!)));
  const line = 'sh -c "exit 3" --api-key=SECRET123';
  const other = 'sh -c "exit 4"';
  const runs = new ShellRuns();
  const beside = new ShellRuns();
  t.equal(hasSubscribers('child_process'), false, 'nothing listens before any work is watched');
  const [failed] = await Promise.all([runs.watch(() => run(line)), beside.watch(() => run(other)), run('sh -c "exit 5"')]);
  t.equal(hasSubscribers('child_process'), false, 'nor after');
  t.same(runs.exit(line), { code: 3, signal: null });
  t.equal(runs.exit(other), undefined, "another watch's command is not this work's");
  t.same(beside.exit(other), { code: 4, signal: null });
  t.equal(runs.exit('sh -c "exit 5"') ?? beside.exit('sh -c "exit 5"'), undefined, 'a command run outside any watch is never seen');
  t.same(processFailure(failed!.message, runs), { program: 'sh', exitCode: 3, stderrBytes: 0 });
  t.same(processFailure(failed!.message), { program: 'sh', stderrBytes: 0 }, 'without the runs: no status');
  t.equal(processFailure('Profile x credential_process returned invalid JSON.'), undefined);
  const killed = new ShellRuns();
  const signalled = await killed.watch(() => run('kill -TERM $$'));
  t.match(processFailure(signalled.message, killed), { program: 'kill', signal: 'SIGTERM' });
});

t.test('the shared files as the SDK reads them: paths, profile names, precedence, source_profile links', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'profiles-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const env = { AWS_CONFIG_FILE: configFile(dir, {}), AWS_SHARED_CREDENTIALS_FILE: credentialFile(dir, {}) };
  t.equal(configPath({ HOME: '/h' }), '/h/.aws/config');
  t.equal(credentialsPath({ USERPROFILE: '/u' }), '/u/.aws/credentials');
  t.equal(configPath({ HOMEPATH: '\\Users\\me', HOMEDRIVE: 'D:' }), join('D:\\Users\\me', '.aws', 'config'));
  t.equal(configPath({}), join(homedir(), '.aws', 'config'));
  t.equal(configPath(env), env.AWS_CONFIG_FILE);
  t.equal(profileName('dev', { AWS_PROFILE: 'other' }), 'dev');
  t.equal(profileName(undefined, { AWS_PROFILE: 'other' }), 'other');
  t.equal(profileName(undefined, {}), 'default');

  configFile(dir, {
    default: { region: 'us-east-1' },
    role: { role_arn: 'arn:aws:iam::1:role/r', source_profile: 'middle' },
    middle: { role_arn: 'arn:aws:iam::1:role/m', source_profile: 'tool' },
    tool: { credential_process: '/opt/helper --from-config' },
    loop: { source_profile: 'loop' },
  });
  writeFileSync(env.AWS_CONFIG_FILE, '; a comment\n[sso-session corp]\nsso_region = eu-west-1\n', { flag: 'a' });
  credentialFile(dir, { tool: { credential_process: '/opt/helper --from-credentials' }, keys: { aws_access_key_id: 'A' } });
  const profiles = sharedProfiles(env);
  t.same([...profiles.keys()].sort(), ['default', 'keys', 'loop', 'middle', 'role', 'tool'], 'sessions are not profiles');
  t.equal(profiles.get('tool')?.credential_process, '/opt/helper --from-credentials', 'the credentials file wins');
  t.equal(processProfile('/opt/helper --from-credentials', 'role', env), 'tool', 'through two source_profile links');
  t.equal(processProfile('/opt/helper --elsewhere', 'role', env), 'role', 'not found: the profile read');
  t.equal(processProfile('/x', 'loop', env), 'loop', 'a loop ends');
  t.same(sharedProfiles({ AWS_CONFIG_FILE: join(dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none') }).size, 0, 'no files');
});
