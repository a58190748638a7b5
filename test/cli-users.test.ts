// `users:` through the real CLI and the test database: two DB users of one instance sign with two
// identities (the checker logs which key signed each login); token and doctor take the user's identity
// from the same file.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestDb } from './support/testdb.js';
import { runPg } from './support/proxy.js';
import { cleanAwsEnv, runCli, startCli } from './support/cli.js';
import { randomAccessKeyId, randomSecretAccessKey } from './support/aws/keys.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
await db.admin('CREATE ROLE iam_ro LOGIN; GRANT rds_iam TO iam_ro; GRANT CONNECT ON DATABASE orders TO iam_ro;');
// The read-only user's identity: a profile with a key of its own, which the database also trusts.
const readonly = { accessKeyId: randomAccessKeyId('AKIA'), secretAccessKey: randomSecretAccessKey() };
await db.trustKey(readonly);
const home = join(db.dir, 'users-home');
mkdirSync(home, { recursive: true });
const credentials = join(home, 'credentials');
writeFileSync(
  credentials,
  `[readonly]\naws_access_key_id = ${readonly.accessKeyId}\naws_secret_access_key = ${readonly.secretAccessKey}\n`,
  { mode: 0o600 },
);
const env = cleanAwsEnv(home, {
  AWS_ACCESS_KEY_ID: db.key.accessKeyId,
  AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey,
  AWS_SHARED_CREDENTIALS_FILE: credentials,
});
const endpoint = `${db.endpoint}:${db.port}`;
const config = join(home, 'proxy.yaml');
writeFileSync(
  config,
  [
    'log: { format: json }',
    'instances:',
    `  - endpoint: ${endpoint}`,
    `    connectTo: 127.0.0.1:${db.port}`,
    `    caFile: ${db.caFile}`,
    '    listen: 127.0.0.1:0',
    '    users:',
    '      iam_ro: { profile: readonly }',
    '',
  ].join('\n'),
);

t.test('each DB user signs with its identity; users not listed with the instance identity', async (t) => {
  const cli = await startCli(['--config', config], env);
  t.teardown(() => void cli.child.kill('SIGKILL'));
  const before = (await db.checkerLog()).length;
  for (const user of ['iam_user', 'iam_ro']) {
    const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
      PGHOST: '127.0.0.1',
      PGPORT: String(cli.port),
      PGUSER: user,
      PGDATABASE: 'orders',
    });
    t.equal(r.stdout.trim(), user, r.stderr);
  }
  const logins = (await db.checkerLog()).slice(before);
  t.match(logins, [
    { user: 'iam_user', accessKeyId: db.key.accessKeyId, ok: true },
    { user: 'iam_ro', accessKeyId: readonly.accessKeyId, ok: true },
  ]);
  const opened = cli.lines.filter((l) => l.msg === 'session opened');
  t.match(opened, [
    { startup: { user: 'iam_user' }, accessKeyId: db.key.accessKeyId, identity: 'the default credential chain' },
    { startup: { user: 'iam_ro' }, accessKeyId: readonly.accessKeyId, identity: 'profile readonly' },
  ]);
  t.ok(
    cli.lines.some((l) => /profile readonly/.test(String(l.msg)) || l.identity === 'profile readonly'),
    'the identity is announced at start',
  );
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});

t.test('token and doctor with --config: the user mapped to its identity', async (t) => {
  // Only the key id is looked at: a token never goes into an assertion's message or diff.
  const signedBy = (stdout: string) => /X-Amz-Credential=([A-Z0-9]+)%2F/.exec(stdout)?.[1];
  const token = await runCli(['token', endpoint, '--config', config, '--user', 'iam_ro'], env);
  t.equal(token.code, 0, token.code === 0 ? 'signed' : token.stderr);
  t.equal(signedBy(token.stdout), readonly.accessKeyId, "signed with the user's key");
  const plain = await runCli(['token', endpoint, '--config', config, '--user', 'iam_user'], env);
  t.equal(signedBy(plain.stdout), db.key.accessKeyId, 'and the others with the instance identity');
  const doctor = await runCli(['doctor', endpoint, '--config', config, '--user', 'iam_ro', '--database', 'orders', '--json'], env);
  t.equal(doctor.code, 0, doctor.stdout + doctor.stderr);
  const checks = (JSON.parse(doctor.stdout) as { checks: Array<{ id: string; found: string }> }).checks;
  t.match(checks.find((c) => c.id === 'credentials')?.found, /profile readonly/);
  const missing = await runCli(['doctor', 'other.abc123xyz.us-east-1.rds.amazonaws.com', '--config', config, '--user', 'iam_ro'], env);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /has no instance for other\.abc123xyz\.us-east-1\.rds\.amazonaws\.com:5432/);
});
