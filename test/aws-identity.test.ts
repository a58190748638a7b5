// Identities without the network: configuration checks, source names, the chain trace, the MFA prompt,
// one holder per identity, short-lived credentials, and what is logged at start.
import t from 'tap';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import { CredentialsHolder } from '../src/aws/credentials.js';
import { SharedTokens } from '../src/aws/tokens.js';
import { announce, callerIdentity, Identities, NoCredentialsError } from '../src/aws/identity.js';
import { credentialProvider, type TracedProvider } from '../src/aws/provider.js';
import { firstShellWord, safeReason } from '../src/aws/reasons.js';
import { renewalAdvice, sourceOf } from '../src/aws/source-names.js';
import { defaultRoleSessionName, identityKey, identityLabel } from '../src/aws/spec.js';
import { terminalMfa } from '../src/aws/mfa.js';
import { ConfigError, resolveIdentity } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { configFile, credentialFile, isolateAwsEnv } from './support/aws/files.js';
import { randomAccessKeyId, randomSecretAccessKey } from './support/aws/keys.js';
import { startSts } from './support/aws/sts.js';
import { fakeTime } from './support/fake-time.js';
import { memoryLog } from './support/memory-log.js';
import { closedPort } from './support/proxy.js';

const ROLE = 'arn:aws:iam::123456789012:role/app-db';

t.test('identity settings are checked at start, naming the option', async (t) => {
  t.same(resolveIdentity({ endpoint: 'x' }), {}, 'the default chain');
  t.same(
    resolveIdentity({
      endpoint: 'x',
      profile: 'dev',
      roleArn: ROLE,
      roleSessionName: 'me@laptop',
      externalId: 'ext-42',
      mfaSerial: 'arn:aws:iam::123456789012:mfa/me',
    }),
    {
      profile: 'dev',
      roleArn: ROLE,
      roleSessionName: 'me@laptop',
      externalId: 'ext-42',
      mfaSerial: 'arn:aws:iam::123456789012:mfa/me',
    },
  );
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ profile: 'has space' }, /--profile: "has space" is not a profile name/],
    [{ roleArn: 'app-db' }, /--role-arn: "app-db" is not an IAM role ARN/],
    [{ roleArn: 'arn:aws:iam::1234:role/x' }, /not an IAM role ARN/],
    [{ roleSessionName: 'x' }, /--role-session-name is a setting of --role-arn/],
    [{ externalId: 'xyz' }, /--external-id is a setting of --role-arn/],
    [{ mfaSerial: 'arn:aws:iam::123456789012:mfa/me' }, /--mfa-serial is a setting of --role-arn/],
    [{ roleArn: ROLE, roleSessionName: 'a b' }, /--role-session-name: 2 to 64/],
    [{ roleArn: ROLE, externalId: 'x' }, /--external-id: 2 to 1224/],
    [{ roleArn: ROLE, mfaSerial: 'me' }, /--mfa-serial: "me" is not an MFA device/],
  ];
  for (const [input, message] of bad)
    t.throws(() => resolveIdentity({ endpoint: 'x', ...input }), { name: 'ConfigError', message }, JSON.stringify(input));
  t.type(new ConfigError('x'), Error);
});

t.test('labels, keys and session names', async (t) => {
  t.equal(identityLabel({}), 'the default credential chain');
  t.equal(identityLabel({ profile: 'dev' }), 'profile dev');
  t.equal(identityLabel({ roleArn: ROLE }), `role ${ROLE} assumed from the default credential chain`);
  t.equal(identityKey({}), identityKey({ profile: undefined }), 'unset and undefined are the same identity');
  t.not(identityKey({ roleArn: ROLE }), identityKey({ roleArn: ROLE, externalId: 'e1' }));
  t.equal(defaultRoleSessionName('build box.local'), 'pg-iam-proxy@build-box.local');
  t.equal(defaultRoleSessionName('h'.repeat(100)).length, 64);
  t.match(defaultRoleSessionName(), /^pg-iam-proxy@[\w+=,.@-]+$/);
});

t.test('the source of credentials, from the feature the SDK recorded', async (t) => {
  const creds = (source?: Record<string, string>) => ({ accessKeyId: 'A', secretAccessKey: 'S', ...(source ? { $source: source } : {}) });
  t.equal(sourceOf(creds()), undefined);
  t.equal(sourceOf(creds({ CREDENTIALS_IMDS: '0' })), 'EC2 instance metadata (IMDSv2)');
  t.equal(
    sourceOf(creds({ CREDENTIALS_PROFILE: 'n', CREDENTIALS_PROFILE_SOURCE_PROFILE: 'o' })),
    'a role profile (role_arn with source_profile)',
    'the most specific wins',
  );
  t.equal(sourceOf(creds({ CREDENTIALS_PROFILE_SSO: 'r' })), 'AWS IAM Identity Center (SSO)');
  t.equal(
    renewalAdvice('AWS IAM Identity Center (SSO)', { profile: 'dev' }),
    'when the SSO session ends, run `aws sso login --profile dev`',
  );
  t.equal(renewalAdvice('an `aws login` session', {}), 'when the session ends, run `aws login`');
  t.match(renewalAdvice('a role profile with an MFA code', {}), /new MFA code on the terminal/);
  t.equal(renewalAdvice('EC2 instance metadata (IMDSv2)', {}), undefined, 'renewed without anyone');
});

t.test('no credentials: the message names the identity, the list each source with its reason', async (t) => {
  const tried = [
    { source: 'environment variables', reason: 'Unable to find environment variable credentials.' },
    { source: 'the shared config and credentials files' },
    { source: 'EC2 instance metadata (IMDSv2)', reason: 'token https://x/?X-Amz-Signature=[REDACTED] refused' },
  ];
  const err = new NoCredentialsError('profile dev', tried, new Error('Could not load credentials from any providers'));
  t.equal(
    err.message,
    'no AWS credentials for profile dev: no source tried had any',
    "the chain's last words name no cause: the sources' reasons do",
  );
  t.match(
    err.describeTried(),
    /^environment variables \(Unable.*\); the shared config and credentials files; EC2 instance metadata \(IMDSv2\) \(token/,
  );
  t.equal(new NoCredentialsError('x', [], 'plain').message, 'no AWS credentials for x: plain');
});

t.test('the MFA prompt: on a terminal only, six digits, one question at a time', async (t) => {
  t.equal(terminalMfa(new PassThrough(), new PassThrough()), undefined, 'no terminal: no prompt, the SDK fails clearly');
  const input = Object.assign(new PassThrough(), { isTTY: true });
  let shown = '';
  const output = new Writable({ write: (c, _e, done) => ((shown += String(c)), done()) });
  const ask = terminalMfa(input, output)!;
  const first = ask('arn:aws:iam::123456789012:mfa/me');
  const second = ask('arn:aws:iam::123456789012:mfa/other');
  input.write('12345\n'); // too short: asked again
  input.write(' 123456 \n');
  t.equal(await first, '123456');
  input.write('654321\n');
  t.equal(await second, '654321');
  t.match(
    shown,
    /MFA code for arn:aws:iam::123456789012:mfa\/me: .*6 digits.*MFA code for arn:aws:iam::123456789012:mfa\/me: .*MFA code for arn:aws:iam::123456789012:mfa\/other/s,
  );
  const wrong = terminalMfa(input, output, 2)!;
  const tries = wrong('dev');
  input.write('no\nnope\n');
  await t.rejects(tries, /no valid MFA code for dev after 2 tries/);
  const closed = wrong('dev');
  input.end();
  await t.rejects(closed, /the terminal closed before an MFA code for dev was given/);
});

t.test('short-lived credentials are refreshed halfway, not on every call', async (t) => {
  let now = 0;
  let fetches = 0;
  const holder = new CredentialsHolder(
    async () => ({ accessKeyId: `K${++fetches}`, secretAccessKey: 's', expiration: new Date(now + 5 * 60_000) }),
    { now: () => now },
  );
  await holder.get();
  for (let i = 0; i < 50; i++) await holder.get();
  await new Promise((r) => setImmediate(r));
  t.equal(fetches, 1, '5-minute credentials are inside the 10-minute window, yet not refetched per call');
  now = 2 * 60_000 + 1; // halfway through the 4 usable minutes
  t.equal((await holder.get()).accessKeyId, 'K1');
  await new Promise((r) => setImmediate(r));
  t.equal(fetches, 2);
  t.equal((await holder.get()).accessKeyId, 'K2');
});

/** A provider seam: no SDK, counts fetches per identity. */
function fakeProviders() {
  const fetches = new Map<string, number>();
  const providerFor = (spec: { profile?: string | undefined }): TracedProvider => {
    const name = spec.profile ?? 'default';
    return {
      provider: async () => {
        fetches.set(name, (fetches.get(name) ?? 0) + 1);
        if (name === 'plain') throw new Error('not a chain error');
        if (name === 'broken')
          throw new NoCredentialsError('profile broken', [{ source: 'environment variables', reason: 'none' }], new Error('nothing'));
        return { accessKeyId: `AKIA_${name}`, secretAccessKey: 's', expiration: new Date(Date.now() + 3_600_000) } as AwsCredentialIdentity;
      },
      source: () => (name === 'sso' ? 'AWS IAM Identity Center (SSO)' : undefined),
    };
  };
  return { fetches, providerFor };
}

t.test('one holder and one token cache per identity, however many instances use it', async (t) => {
  const { fetches, providerFor } = fakeProviders();
  const identities = new Identities({ providerFor });
  const a = identities.for({ profile: 'dev' }, 'us-east-1');
  t.equal(identities.for({ profile: 'dev' }, 'eu-west-1'), a);
  const b = identities.for({}, 'us-east-1');
  t.not(b, a);
  t.equal(identities.all().length, 2);
  await Promise.all([a.holder.get(), a.holder.get(), b.holder.get()]);
  t.same(Object.fromEntries(fetches), { dev: 1, default: 1 });
  t.equal(a.label, 'profile dev');
  identities.close();
});

t.test('at start: who signs, from where, until when; failures are warnings', async (t) => {
  let out = '';
  const sink = new Writable({ write: (c, _e, done) => ((out += String(c)), done()) });
  const log = createLogger({ level: 'info', format: 'json' }, sink);
  const { providerFor } = fakeProviders();
  const identities = new Identities({ providerFor, log });
  const env = { ...process.env };
  t.teardown(() => void (process.env = env));
  process.env.AWS_ENDPOINT_URL_STS = 'http://127.0.0.1:9'; // nothing listens: STS does not answer
  t.equal(await announce(identities.for({ profile: 'sso' }, 'us-east-1'), 'us-east-1', log), true);
  t.equal(await announce(identities.for({ profile: 'broken' }, 'us-east-1'), 'us-east-1', log), false);
  t.equal(await announce(identities.for({ profile: 'plain' }, 'us-east-1'), 'us-east-1', log), false);
  const lines = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(
    lines.find((l) => String(l.msg).startsWith('AWS credentials ready')),
    {
      identity: 'profile sso',
      source: 'AWS IAM Identity Center (SSO)',
      accessKeyId: 'AKIA_sso',
      msg: 'AWS credentials ready (sts:GetCallerIdentity did not answer)',
    },
  );
  t.match(
    lines.find((l) => l.advice),
    { level: 40, advice: 'when the SSO session ends, run `aws sso login --profile sso`' },
  );
  t.match(
    lines.find((l) => l.identity === 'profile broken' && l.level === 40 && l.tried),
    { tried: 'environment variables (none)' },
  );
  t.match(
    lines.find((l) => l.identity === 'profile plain' && l.level === 40 && !('tried' in l)),
    { err: { message: 'not a chain error' } },
  );
  t.notMatch(out, /"secretAccessKey"|"s"/);
});

t.test('idle credentials are renewed by a timer, and tokens follow the renewed credentials', async (t) => {
  let fetches = 0;
  let renewed: () => void = () => undefined;
  const second = new Promise<void>((resolve) => (renewed = resolve));
  // 61 s of life, 60 s of which are unusable: the holder wakes itself halfway through the last second.
  const holder = new CredentialsHolder(
    async () => ({ accessKeyId: `K${++fetches}`, secretAccessKey: 's', expiration: new Date(Date.now() + 61_000) }),
    {
      onRefresh: () => fetches === 2 && renewed(),
    },
  );
  t.teardown(() => holder.close());
  const tokens = new SharedTokens(holder, { sign: async (_scope, c) => `signed-by-${c.accessKeyId}` });
  const scope = { host: 'h', port: 5432, region: 'us-east-1', user: 'u' };
  t.equal((await tokens.get(scope)).accessKeyId, 'K1');
  const keepAlive = setInterval(() => undefined, 1_000); // the holder's timer is unref'd by design
  await second; // no caller asked: the timer did it
  clearInterval(keepAlive);
  t.equal(holder.peek()?.accessKeyId, 'K2');
  t.equal((await tokens.get(scope)).value, 'signed-by-K2', 'a token signed with replaced credentials is not reused');
});

t.test('the real SDK in process: --role-arn with --mfa-serial, a role without base credentials, who am I', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'identity-'));
  const sts = await startSts({ mfaTokenCode: '135790' });
  const restore = isolateAwsEnv(dir, { AWS_EC2_METADATA_DISABLED: 'true', AWS_ENDPOINT_URL_STS: sts.url });
  t.teardown(async () => {
    restore();
    await sts.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // No base credentials at all: the role's error is the base chain's, with every source tried.
  const orphan = credentialProvider({ roleArn: ROLE }, { region: 'us-east-1' });
  await t.rejects(orphan.provider(), {
    name: 'NoCredentialsError',
    message: /no AWS credentials for role .* assumed from the default credential chain/,
  });
  t.equal(orphan.source(), undefined, 'no source before a success');

  process.env.AWS_ACCESS_KEY_ID = 'AKIABASEKEY000000001';
  process.env.AWS_SECRET_ACCESS_KEY = 'base-secret';
  const asked: string[] = [];
  const traced = credentialProvider(
    { roleArn: ROLE, mfaSerial: 'arn:aws:iam::123456789012:mfa/bob', roleSessionName: 'bob' },
    {
      region: 'eu-west-1',
      mfa: async (serial) => (asked.push(serial), '135790'),
    },
  );
  const creds = await traced.provider();
  t.same(asked, ['arn:aws:iam::123456789012:mfa/bob']);
  t.match(sts.last({ action: 'AssumeRole' }), {
    accessKeyId: 'AKIABASEKEY000000001',
    signingRegion: 'eu-west-1',
    params: { RoleArn: ROLE, RoleSessionName: 'bob', SerialNumber: 'arn:aws:iam::123456789012:mfa/bob', TokenCode: '135790' },
  });
  t.equal(traced.source(), `${ROLE} assumed from environment variables (AWS_ACCESS_KEY_ID) with an MFA code`);
  t.equal(renewalAdvice(traced.source()!, {}), 'each renewal asks for a new MFA code on the terminal');

  const who = await callerIdentity(creds, 'eu-west-1');
  t.match(who, { arn: /^arn:aws:sts::123456789012:assumed-role\/app-db\/bob$/, account: '123456789012' });
  t.ok(who.serverDate instanceof Date && Math.abs(who.serverDate.getTime() - Date.now()) < 5_000, 'the server clock, from its Date header');
});

t.test('a failed refresh names what the user can do', async (t) => {
  let now = 0;
  let fail = false;
  let out = '';
  const sink = new Writable({ write: (c, _e, done) => ((out += String(c)), done()) });
  const holder = new CredentialsHolder(
    async () => {
      if (fail) throw new Error('The SSO session has expired');
      return { accessKeyId: 'K', secretAccessKey: 's', expiration: new Date(now + 60 * 60_000) };
    },
    { now: () => now, log: createLogger({ level: 'warn', format: 'json' }, sink), advice: () => 'run `aws sso login`' },
  );
  t.teardown(() => holder.close());
  await holder.get();
  fail = true;
  now = 55 * 60_000;
  await holder.get();
  await new Promise((r) => setImmediate(r));
  t.match(JSON.parse(out.trim().split('\n')[0]!), {
    msg: 'AWS credentials refresh failed; still using the current ones',
    keepUsing: true,
    advice: 'run `aws sso login`',
    expiration: new Date(60 * 60_000).toISOString(),
  });
});

/** A credential_process helper that fails the way the report describes: a secret in its arguments, another on stderr. */
function failingHelper(dir: string, status = 1): string {
  const script = join(dir, 'failing-helper.sh');
  writeFileSync(script, `#!/bin/sh\necho "token=SECRET456" >&2\nexit ${status}\n`);
  chmodSync(script, 0o700);
  return `API_KEY=SECRET789 ${script} --api-key=SECRET123`;
}
const SECRETS = /SECRET123|SECRET456|SECRET789/;

t.test('SDK error texts are made safe before anyone sees them', async (t) => {
  // Node's exec error, as the SDK passes it on: the whole command line, then the program's stderr.
  t.equal(
    safeReason('Command failed: /opt/never-ran --api-key=SECRET123\ntoken=SECRET456\n', 'dev'),
    'credential_process of profile dev failed',
    'no exit seen: still no arguments, no output',
  );
  t.equal(safeReason('Command failed: /opt/never-ran --api-key=SECRET123\n'), 'credential_process failed');
  t.equal(
    safeReason('Profile dev credential_process returned invalid JSON.'),
    'Profile dev credential_process returned invalid JSON.',
    "the SDK's own texts pass as they are",
  );
  // V8 quotes the text around a JSON fault: a piece of an IMDS or container answer, an SSO or login token file.
  t.equal(safeReason(`SyntaxError: Unexpected token 'o', "token=SECRE"... is not valid JSON`), 'SyntaxError: the text is not valid JSON');
  t.equal(
    safeReason(
      `Failed to load token from /h/.aws/login/cache/x.json: SyntaxError: Unexpected token '}', ..."T","x":tru}" is not valid JSON`,
    ),
    'Failed to load token from /h/.aws/login/cache/x.json: SyntaxError: the text is not valid JSON',
  );
  t.equal(safeReason('Unexpected end of JSON input'), 'Unexpected end of JSON input');
  t.equal(
    safeReason('http://user:SECRET123@127.0.0.1:1/creds is not a valid container metadata service URL'),
    'http://[REDACTED]@127.0.0.1:1/creds is not a valid container metadata service URL',
  );
  t.equal(
    safeReason('GET https://x/?X-Amz-Security-Token=SECRET456&a=1 refused'),
    'GET https://x/?X-Amz-Security-Token=[REDACTED]&a=1 refused',
  );

  t.equal(firstShellWord('/opt/helper --api-key=X'), '/opt/helper');
  t.equal(
    firstShellWord('  API_KEY=SECRET789 OTHER=1 /opt/helper --x'),
    '/opt/helper',
    'variable assignments before the program are not its name',
  );
  t.equal(firstShellWord(`"/opt/my helper" --x`), '/opt/my helper');
  t.equal(firstShellWord(`'/opt/a b'/c\\ d --x`), '/opt/a b/c d');
  t.equal(firstShellWord(`"/opt/q\\"uote" x`), '/opt/q"uote');
  t.equal(firstShellWord(''), '');

  // A cause that carries the unsafe text is replaced by a safe copy: logs print causes' messages and stacks.
  const raw = new Error('Command failed: /opt/h --api-key=SECRET123\ntoken=SECRET456\n');
  const err = new NoCredentialsError('profile dev', [], raw);
  t.equal(err.message, 'no AWS credentials for profile dev: credential_process failed');
  t.not(err.cause, raw);
  t.match(err.cause, { name: 'Error', message: 'credential_process failed', stack: /^Error: credential_process failed\n {4}at / });
  const { log, raw: logged } = memoryLog();
  log.warn({ err }, 'fetch failed');
  t.notMatch(logged(), SECRETS, 'nothing of it in a logged error, causes included');
  const plain = new Error('Could not load credentials from any providers');
  t.equal(new NoCredentialsError('x', [], plain).cause, plain, 'a safe cause is kept as it is');
});

t.test('a failed credential_process, through the real SDK: clients hear its profile and status, the log its program', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'identity-process-'));
  const command = failingHelper(dir);
  const restore = isolateAwsEnv(dir, { AWS_EC2_METADATA_DISABLED: 'true', AWS_ENDPOINT_URL_STS: 'http://127.0.0.1:9' });
  configFile(dir, { tool: { credential_process: command }, db: { role_arn: ROLE, source_profile: 'tool' } });
  t.teardown(() => {
    restore();
    rmSync(dir, { recursive: true, force: true });
  });
  const { log, lines, raw } = memoryLog('debug');
  const traced = credentialProvider({ profile: 'tool' }, { region: 'us-east-1', log });
  const err = (await traced.provider().then(
    () => undefined,
    (e: unknown) => e,
  )) as NoCredentialsError;
  t.type(err, NoCredentialsError);
  t.equal(err.message, 'no AWS credentials for profile tool: no source tried had any');
  t.match(err.describeTried(), /the shared config and credentials files \(credential_process of profile tool exited 1\)/);
  const warned = lines().filter((l) => String(l.msg).startsWith('credential_process'));
  t.ok(warned.length >= 1);
  t.match(warned[0], {
    level: 40,
    msg: 'credential_process of profile tool exited 1',
    profile: 'tool',
    program: join(dir, 'failing-helper.sh'),
    exitCode: 1,
    stderr: '[not logged, 16 bytes: it may hold secrets; run the program by hand to read it]',
  });
  log.warn({ err }, 'as the holder logs it');
  t.notMatch(
    `${raw()}${err.message}${err.describeTried()}${String((err.cause as Error).stack)}`,
    SECRETS,
    'no argument and no output of it anywhere, even at debug',
  );

  // A role profile whose source_profile runs it: the source profile is named.
  const role = credentialProvider({ profile: 'db' }, { region: 'us-east-1', log });
  const roleErr = (await role.provider().then(
    () => undefined,
    (e: unknown) => e,
  )) as NoCredentialsError;
  t.match(roleErr.describeTried(), /\(credential_process of profile tool exited 1\)/);

  // Killed, not found: the same shape, the status said in words.
  configFile(dir, { tool: { credential_process: `${join(dir, 'no-such-helper')} --api-key=SECRET123` } });
  const missing = (await credentialProvider({ profile: 'tool' }, { region: 'us-east-1' })
    .provider()
    .then(
      () => undefined,
      (e: unknown) => e,
    )) as NoCredentialsError;
  t.match(missing.describeTried(), /credential_process of profile tool exited 127 \(command not found\)/);
  t.notMatch(missing.describeTried(), SECRETS);
});

t.test('exported credentials 30 s from expiry, through the real SDK chain: a few fetches, not a busy loop', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'identity-expiring-'));
  const time = fakeTime(t);
  const expiration = new Date(Date.now() + 30_000);
  // What `aws configure export-credentials --format env` prints, near the end of the session.
  const restore = isolateAwsEnv(dir, {
    AWS_ACCESS_KEY_ID: 'ASIAEXPORTED00000001',
    AWS_SECRET_ACCESS_KEY: 'exported-secret',
    AWS_SESSION_TOKEN: 'exported-session',
    AWS_CREDENTIAL_EXPIRATION: expiration.toISOString(),
    AWS_EC2_METADATA_DISABLED: 'true',
  });
  t.teardown(() => {
    restore();
    rmSync(dir, { recursive: true, force: true });
  });
  let calls = 0;
  const { log, lines } = memoryLog('info');
  const identities = new Identities({
    log,
    providerFor: (spec, options) => {
      const traced = credentialProvider(spec, options);
      return { ...traced, provider: (props) => (calls++, traced.provider(props)) };
    },
  });
  t.teardown(() => identities.close());
  const { holder } = identities.for({}, 'us-east-1');
  await t.rejects(holder.get(), {
    name: 'CredentialsExpiringError',
    message: `the AWS credentials from environment variables (AWS_ACCESS_KEY_ID) expire at ${expiration.toISOString()}, in less than 60 s, and fetching again gives none newer: renew them where they come from`,
  });
  await time.advance(2_000);
  t.equal(calls, 2, 'two SDK fetches in 2 s (the report counted 1,461)');
  await time.advance(58_000);
  t.equal(calls, 6, 'a minute: fetched at 0, 1, 3, 7, 15 and 31 s');
  await time.advance(9 * 60_000);
  t.equal(calls, 15, 'ten minutes: then once a minute');
  const warnings = lines().filter(
    (l) => l.msg === 'AWS credentials from the source are too close to expiry and it gives none newer: the proxy cannot renew them',
  );
  t.equal(warnings.length, calls, 'each fetch warned that the proxy cannot renew them');
  t.ok(warnings.every((l) => l.level === 40));
});

t.test('static keys rotated in the shared credentials file are read again after invalidate()', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'identity-rotate-'));
  const first = { aws_access_key_id: randomAccessKeyId('AKIA'), aws_secret_access_key: randomSecretAccessKey() };
  const second = { aws_access_key_id: randomAccessKeyId('AKIA'), aws_secret_access_key: randomSecretAccessKey() };
  const restore = isolateAwsEnv(dir, { AWS_EC2_METADATA_DISABLED: 'true' });
  credentialFile(dir, { app: first });
  t.teardown(() => {
    restore();
    rmSync(dir, { recursive: true, force: true });
  });
  const identities = new Identities();
  const { holder } = identities.for({ profile: 'app' }, 'us-east-1');
  t.equal((await holder.get()).accessKeyId, first.aws_access_key_id);
  credentialFile(dir, { app: second }); // the same file, rewritten: `aws configure set` after a rotation
  t.equal((await holder.get()).accessKeyId, first.aws_access_key_id, 'held: static keys are not fetched again on their own');
  holder.invalidate(first.aws_access_key_id);
  const renewed = await holder.get();
  t.equal(renewed.accessKeyId, second.aws_access_key_id, 'the rewritten file is read, not the SDK cached copy');
  t.equal(renewed.secretAccessKey, second.aws_secret_access_key);
});

t.test('each identity labels its token cache', async (t) => {
  const { providerFor } = fakeProviders();
  const identities = new Identities({ providerFor, tokens: { reuseMs: 1_000 } });
  t.equal(identities.for({ profile: 'dev' }, 'us-east-1').tokens.label, 'profile dev');
  t.equal(identities.for({ roleArn: ROLE }, 'us-east-1').tokens.label, `role ${ROLE} assumed from the default credential chain`);
});

t.test('no credentials anywhere, through the real SDK: each source says why, IMDS too, and the logged error says it once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'identity-none-'));
  const restore = isolateAwsEnv(dir, { AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${await closedPort()}` });
  t.teardown(() => {
    restore();
    rmSync(dir, { recursive: true, force: true });
  });
  const { log, raw } = memoryLog();
  const err = (await credentialProvider({}, { region: 'us-east-1', log })
    .provider()
    .then(
      () => undefined,
      (e: unknown) => e,
    )) as NoCredentialsError;
  t.equal(err.message, 'no AWS credentials for the default credential chain: no source tried had any');
  t.match(err.tried.at(-1), {
    source: 'EC2 instance metadata (IMDSv2)',
    reason: /^no credentials from the instance metadata service: not an EC2 instance, no instance role attached, or IMDS unreachable/,
  });
  t.notMatch(err.describeTried(), /not set in env|checking config file/, "no SDK setting lookup passes for a source's reason");
  log.warn({ err }, 'fetch failed');
  const logged = JSON.parse(raw().trim().split('\n').at(-1)!) as { err: { message: string } };
  t.equal(
    logged.err.message.match(/Could not load credentials from any providers/g)?.length ?? 0,
    1,
    `the cause is said once: ${logged.err.message}`,
  );
});
