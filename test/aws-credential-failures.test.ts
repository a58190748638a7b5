// Credential sources that fail or run out, through the real CLI in front of the test database: what
// clients, `token`, `doctor` and the logs say, and what they must never say.
import t from 'tap';
import pg from 'pg';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanAwsEnv, runCli, startCli, type StartedCli } from './support/cli.js';
import { startTestDb } from './support/testdb.js';
import { runPg } from './support/proxy.js';
import { configFile, credentialFile } from './support/aws/files.js';
import { randomAccessKeyId, randomSecretAccessKey, randomSessionToken } from './support/aws/keys.js';

const db = await startTestDb();
t.teardown(() => db.destroy());

const ENDPOINT = `${db.endpoint}:${db.port}`;
const dial = ['--connect-to', `127.0.0.1:${db.port}`, '--ca-file', db.caFile];
const SECRETS = /SECRET123|SECRET456|SECRET789/;
const CANNOT_RENEW = 'AWS credentials from the source are too close to expiry and it gives none newer: the proxy cannot renew them';

/** `serve` with JSON logs; stdout collected too (it should stay empty). */
async function serve(environment: NodeJS.ProcessEnv, args: string[]): Promise<StartedCli & { stdout: () => string }> {
  const cli = await startCli([ENDPOINT, '--listen', '127.0.0.1:0', ...dial, '--log-format', 'json', ...args], environment);
  let stdout = '';
  cli.child.stdout!.on('data', (d: Buffer) => (stdout += String(d)));
  t.teardown(async () => {
    if (cli.child.exitCode === null) {
      cli.child.kill('SIGKILL');
      await cli.exit;
    }
  });
  return Object.assign(cli, { stdout: () => stdout });
}

async function stop(cli: StartedCli): Promise<number | null> {
  cli.child.kill('SIGTERM');
  return cli.exit;
}

const login = (cli: StartedCli) =>
  new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders' }).connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
const psql = (cli: StartedCli) =>
  runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(cli.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });

t.test('a failing credential_process: its arguments and its stderr reach no client, no output and no log', async (t) => {
  const dir = join(db.dir, 'failing-process');
  mkdirSync(dir, { recursive: true });
  const script = join(dir, 'helper.sh');
  // A helper that takes an API key as an argument and prints a session token to stderr when it fails.
  writeFileSync(script, '#!/bin/sh\necho "token=SECRET456" >&2\nexit 1\n');
  chmodSync(script, 0o700);
  const config = configFile(dir, { tool: { credential_process: `API_KEY=SECRET789 ${script} --api-key=SECRET123` } });
  const environment = cleanAwsEnv(db.dir, { AWS_CONFIG_FILE: config });

  const token = await runCli(['token', ENDPOINT, '--profile', 'tool', '--user', 'iam_user'], environment);
  t.equal(token.code, 1);
  t.equal(token.stdout, '');
  t.match(
    token.stderr,
    /^pg-iam-proxy: cannot sign a token: no AWS credentials for profile tool: .*\n {2}sources tried: .*credential_process of profile tool exited 1/s,
  );
  t.notMatch(token.stdout + token.stderr, SECRETS, 'token: neither the argument nor the stderr');

  const doctor = await runCli(['doctor', ENDPOINT, ...dial, '--profile', 'tool', '--user', 'iam_user', '--json'], environment);
  t.not(doctor.code, 0);
  t.match(doctor.stdout, /credential_process of profile tool exited 1/);
  t.notMatch(doctor.stdout + doctor.stderr, SECRETS, 'doctor: neither');

  for (const level of ['info', 'debug']) {
    const cli = await serve(environment, ['--profile', 'tool', '--log-level', level]);
    t.match(await cli.line((l) => String(l.msg).startsWith('no AWS credentials yet')), {
      tried: /credential_process of profile tool exited 1/,
    });
    const err = await login(cli);
    t.match(err, {
      code: '08001',
      message: 'pg-iam-proxy could not sign an IAM token: no AWS credentials for profile tool: no source tried had any',
      detail: /^Sources tried, in order: .*the shared config and credentials files \(credential_process of profile tool exited 1\)/,
    });
    t.notMatch(`${err?.message} ${err?.detail} ${err?.hint}`, SECRETS, `${level}: the pg client hears neither`);
    const p = await psql(cli);
    t.match(p.stderr, /credential_process of profile tool exited 1/);
    t.notMatch(p.stdout + p.stderr, SECRETS, `${level}: psql hears neither`);
    t.equal(await stop(cli), 0);
    t.match(
      cli.lines.find((l) => l.msg === 'credential_process of profile tool exited 1'),
      {
        level: 40,
        profile: 'tool',
        program: script,
        exitCode: 1,
        stderr: '[not logged, 16 bytes: it may hold secrets; run the program by hand to read it]',
      },
      `${level}: the operator hears which program failed, and how`,
    );
    t.notMatch(JSON.stringify(cli.lines) + cli.stdout(), SECRETS, `${level}: no log line holds either`);
  }
});

t.test('exported credentials 30 s from expiry: clients hear the proxy cannot renew them; a few fetches, no loop', async (t) => {
  // `aws configure export-credentials --format env` near the end of the session.
  const expiration = new Date(Date.now() + 30_000);
  const started = Date.now();
  const cli = await serve(
    cleanAwsEnv(db.dir, {
      AWS_ACCESS_KEY_ID: randomAccessKeyId('ASIA'),
      AWS_SECRET_ACCESS_KEY: randomSecretAccessKey(),
      AWS_SESSION_TOKEN: randomSessionToken(),
      AWS_CREDENTIAL_EXPIRATION: expiration.toISOString(),
    }),
    ['--log-level', 'debug'],
  );
  t.match(await cli.line((l) => l.msg === CANNOT_RENEW), { level: 40, fetchedExpiration: expiration.toISOString() });
  const expected = `the AWS credentials from environment variables (AWS_ACCESS_KEY_ID) expire at ${expiration.toISOString()}, in less than 60 s, and fetching again gives none newer: renew them where they come from`;
  t.match(await login(cli), { code: '08001', message: `pg-iam-proxy could not sign an IAM token: ${expected}` });
  const p = await psql(cli);
  t.match(
    p.stderr,
    /FATAL: {2}pg-iam-proxy could not sign an IAM token: the AWS credentials from environment variables \(AWS_ACCESS_KEY_ID\) expire at .*renew them where they come from/,
  );
  // The retry the backoff schedules, on its own (no client asked): then the count over that period.
  let seen = 0;
  await cli.line((l) => l.msg === CANNOT_RENEW && ++seen === 2);
  t.equal(await stop(cli), 0);
  const elapsed = Date.now() - started;
  const fetchedAt = cli.lines.filter((l) => l.msg === CANNOT_RENEW).map((l) => Number(l.time));
  t.ok(fetchedAt[1]! - fetchedAt[0]! >= 900, `the second fetch waited the first backoff step: ${fetchedAt[1]! - fetchedAt[0]!} ms`);
  // The backoff fetches at 0, 1, 3, 7, 15 ... s: at most 1 + log2(1 + elapsed s) in `elapsed`, one more for slack.
  t.ok(
    fetchedAt.length <= 2 + Math.log2(1 + elapsed / 1_000),
    `${fetchedAt.length} fetches in ${elapsed} ms (the report counted 1,461 in 2 s)`,
  );
  t.equal(cli.lines.filter((l) => l.msg === 'AWS credentials fetched').length, 0, 'never taken as fetched');
});

t.test('static keys rotated in the shared credentials file: a refused login reads the file again', async (t) => {
  const dir = join(db.dir, 'rotated-keys');
  const retired = { accessKeyId: randomAccessKeyId('AKIA'), secretAccessKey: randomSecretAccessKey() }; // never trusted: already deactivated
  const rotated = { accessKeyId: randomAccessKeyId('AKIA'), secretAccessKey: randomSecretAccessKey() };
  await db.trustKey(rotated);
  const credentials = credentialFile(dir, {
    app: { aws_access_key_id: retired.accessKeyId, aws_secret_access_key: retired.secretAccessKey },
  });
  const cli = await serve(cleanAwsEnv(db.dir, { AWS_SHARED_CREDENTIALS_FILE: credentials }), ['--profile', 'app']);
  await cli.line((l) => String(l.msg).startsWith('AWS credentials ready') || l.msg === 'AWS identity ready');
  // The key is rotated while the proxy runs (`aws configure set` rewrites the file in place).
  credentialFile(dir, { app: { aws_access_key_id: rotated.accessKeyId, aws_secret_access_key: rotated.secretAccessKey } });
  const p = await psql(cli);
  t.equal(p.stdout.trim(), 'iam_user', `logged in with the rotated key, no restart: ${p.stderr}`);
  const signers = (await db.checkerLog()).slice(-2).map((e) => [e.accessKeyId, e.ok]);
  t.same(signers, [
    [retired.accessKeyId, false],
    [rotated.accessKeyId, true],
  ]);
  t.equal(await stop(cli), 0);
});
