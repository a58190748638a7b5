// Tests for the RDS-like test database itself: if these pass, the database
// accepts exactly what RDS with IAM auth would accept, so proxy tests built on
// it mean something.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { Signer } from '@aws-sdk/rds-signer';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@smithy/core/checksum';
import t from 'tap';
import { ENDPOINT, REGION, startTestDb, type AwsKey, type TestDb } from './support/testdb.js';

const PSQL = '/usr/lib/postgresql/15/bin/psql';

interface PsqlResult {
  code: number;
  stdout: string;
  stderr: string;
}

interface ConnOpts {
  user?: string;
  password?: string;
  sslmode?: string;
  rootCert?: string;
  host?: string;
  sql?: string;
}

let db: TestDb;
/** Every token handed to the server, to prove none of them is ever logged. */
const usedTokens: string[] = [];

function psql(o: ConnOpts = {}): Promise<PsqlResult> {
  const conninfo = [
    `host=${o.host ?? ENDPOINT}`,
    'hostaddr=127.0.0.1',
    `port=${db.port}`,
    `sslmode=${o.sslmode ?? 'verify-full'}`,
    `sslrootcert=${o.rootCert ?? db.caFile}`,
    `user=${o.user ?? 'iam_user'}`,
    'dbname=orders',
    'connect_timeout=10',
  ].join(' ');
  if (o.password !== undefined) usedTokens.push(o.password);
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' };
  if (o.password !== undefined) env.PGPASSWORD = o.password;
  return new Promise((resolve) => {
    execFile(PSQL, ['-X', '-At', '-w', '-c', o.sql ?? 'SELECT current_user', conninfo], { env }, (err, stdout, stderr) => {
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout: stdout.trim(), stderr });
    });
  });
}

interface TokenOpts {
  user?: string;
  key?: AwsKey;
  region?: string;
  hostname?: string;
  port?: number;
}

function token(o: TokenOpts = {}): Promise<string> {
  return new Signer({
    hostname: o.hostname ?? ENDPOINT,
    port: o.port ?? db.port,
    region: o.region ?? REGION,
    username: o.user ?? 'iam_user',
    credentials: o.key ?? db.key,
  }).getAuthToken();
}

/**
 * A token signed at an arbitrary time (the RDS Signer has no signingDate
 * option), with the query parameters in a scrambled order to prove the
 * checker parses rather than pattern-matches.
 */
async function tokenAt(signingDate: Date, o: TokenOpts & { expiresIn?: number } = {}): Promise<string> {
  const key = o.key ?? db.key;
  const host = `${o.hostname ?? ENDPOINT}:${o.port ?? db.port}`;
  const signer = new SignatureV4({ service: 'rds-db', region: o.region ?? REGION, credentials: key, sha256: Sha256 });
  const presigned = await signer.presign(
    {
      method: 'GET',
      protocol: 'https:',
      hostname: o.hostname ?? ENDPOINT,
      port: o.port ?? db.port,
      path: '/',
      query: { Action: 'connect', DBUser: o.user ?? 'iam_user' },
      headers: { host },
    },
    { signingDate, expiresIn: o.expiresIn ?? 900 },
  );
  const pairs = Object.entries(presigned.query ?? {}).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return `${host}/?${pairs.reverse().join('&')}`;
}

function randomKey(sessionToken?: string): AwsKey {
  const id = `${sessionToken === undefined ? 'AKIA' : 'ASIA'}${randomBytes(8).toString('hex').toUpperCase()}`;
  const key: AwsKey = { accessKeyId: id, secretAccessKey: randomBytes(30).toString('base64') };
  if (sessionToken !== undefined) key.sessionToken = sessionToken;
  return key;
}

async function lastReason(): Promise<string | undefined> {
  return (await db.checkerLog()).at(-1)?.reason;
}

const PAM_FAILED = /PAM authentication failed for user "iam_user"/;

t.before(async () => {
  const started = Date.now();
  db = await startTestDb();
  t.comment(`startTestDb (incl. per-process template) took ${Date.now() - started} ms`);
  const again = Date.now();
  const second = await startTestDb();
  t.comment(`second startTestDb took ${Date.now() - again} ms`);
  await second.destroy();
});

t.teardown(async () => {
  await (db as TestDb | undefined)?.destroy();
});

t.test('fixture', async (t) => {
  t.equal(db.endpoint, ENDPOINT);
  t.equal(db.region, REGION);
  t.match(db.key.accessKeyId, /^AKIA[A-Z2-7]{16}$/);
  t.match(db.caPem, /^-----BEGIN CERTIFICATE-----/);
  t.equal(await db.admin('SELECT count(*) FROM items', 'orders'), '3');
  t.equal(
    await db.admin(
      "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE m.roleid = 'rds_iam'::regrole ORDER BY 1",
    ),
    'MixedCase_User\nalice@example.com\napp-sa@my-project.iam\niam_user',
  );
  await t.rejects(db.admin('SELECT nope'), /column "nope" does not exist/);
  const hba = readFileSync(join(db.dir, 'pgdata', 'pg_hba.conf'), 'utf8');
  t.notMatch(hba, /^host\s/m, 'no plain host lines');
});

t.test('valid IAM token logs in over verify-full TLS', async (t) => {
  const r = await psql({ password: await token(), sql: 'SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'iam_user|t');
  const items = await psql({ password: await token(), sql: 'SELECT name FROM items ORDER BY id' });
  t.equal(items.stdout, 'apple\nbanana\ncherry', items.stderr);
  const temp = await psql({ password: await token(), sql: 'CREATE TEMP TABLE t(x int); SELECT 1' });
  t.equal(temp.code, 0, temp.stderr);
  t.equal(await lastReason(), 'ok');
});

t.test('mixed-case role name', async (t) => {
  const r = await psql({ user: 'MixedCase_User', password: await token({ user: 'MixedCase_User' }) });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'MixedCase_User');
  const lower = await psql({ user: 'MixedCase_User', password: await token({ user: 'mixedcase_user' }) });
  t.match(lower.stderr, /PAM authentication failed for user "MixedCase_User"/, 'DBUser is case-sensitive');
});

t.test('parameter order does not matter; 10 minute old token still valid', async (t) => {
  const r = await psql({ password: await tokenAt(new Date(Date.now() - 600_000)) });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'iam_user');
});

t.test('invalid tokens are rejected', async (t) => {
  const good = await token();
  const sig = /X-Amz-Signature=([0-9a-f]+)/.exec(good)?.[1] ?? '';
  const flipped = sig.slice(0, -1) + (sig.endsWith('0') ? '1' : '0');
  const wrongSecret: AwsKey = { accessKeyId: db.key.accessKeyId, secretAccessKey: `x${db.key.secretAccessKey.slice(1)}` };
  const cases: [string, Promise<string> | string, string][] = [
    ['wrong region', token({ region: 'eu-west-1' }), 'wrong region'],
    ['wrong hostname', token({ hostname: 'otherdb.abc123xyz.us-east-1.rds.amazonaws.com' }), 'wrong host'],
    ['wrong port', token({ port: db.port + 1 }), 'wrong host'],
    ['token for another user', token({ user: 'MixedCase_User' }), 'DBUser does not match login user'],
    ['unknown key', token({ key: randomKey() }), 'unknown access key'],
    ['wrong secret', token({ key: wrongSecret }), 'signature mismatch'],
    ['tampered signature', good.replace(sig, flipped), 'signature mismatch'],
    ['tampered DBUser', good.replace('DBUser=iam_user', 'DBUser=iam_user&x=1'), 'signature mismatch'],
    ['16 minutes old', tokenAt(new Date(Date.now() - 960_000)), 'token expired'],
    ['short Expires, elapsed', tokenAt(new Date(Date.now() - 120_000), { expiresIn: 60 }), 'token expired'],
    ['10 minutes in the future', tokenAt(new Date(Date.now() + 600_000)), 'X-Amz-Date is in the future'],
    ['Expires > 900', tokenAt(new Date(), { expiresIn: 3600 }), 'X-Amz-Expires 3600 > 900'],
    ['not a token', 'hunter2', 'malformed token: no host'],
  ];
  for (const [name, tok, reason] of cases) {
    const r = await psql({ password: await tok });
    t.not(r.code, 0, `${name}: refused`);
    t.match(r.stderr, PAM_FAILED, `${name}: PAM authentication failed`);
    t.equal(await lastReason(), reason, `${name}: checker reason`);
  }
});

t.test('TLS is required and verified', async (t) => {
  const plain = await psql({ password: await token(), sslmode: 'disable' });
  t.match(plain.stderr, /no pg_hba\.conf entry for host "127\.0\.0\.1", user "iam_user", database "orders", no encryption/);
  const untrusted = await psql({ password: await token(), rootCert: db.otherCaFile });
  t.match(untrusted.stderr, /certificate verify failed/);
  const byIp = await psql({ password: await token(), host: '127.0.0.1' });
  t.match(byIp.stderr, /does not match host name "127\.0\.0\.1"/);
});

t.test('non-IAM users use SCRAM passwords', async (t) => {
  const ok = await psql({ user: 'pw_user', password: 'pw_secret' });
  t.equal(ok.code, 0, ok.stderr);
  t.equal(ok.stdout, 'pw_user');
  const bad = await psql({ user: 'pw_user', password: 'wrong' });
  t.match(bad.stderr, /password authentication failed for user "pw_user"/);
  const log = readFileSync(join(db.dir, 'postgres.log'), 'utf8');
  t.match(log, /connection authenticated: identity="pw_user" method=scram-sha-256/);
  t.match(log, /connection authenticated: identity="iam_user" method=pam/);
  const iamWithPassword = await psql({ password: 'pw_secret' });
  t.match(iamWithPassword.stderr, PAM_FAILED, 'rds_iam members cannot use a password');
});

t.test('rejectNext forces transient failures', async (t) => {
  await db.rejectNext(1);
  const first = await psql({ password: await token() });
  t.match(first.stderr, PAM_FAILED);
  t.equal(await lastReason(), 'forced');
  const second = await psql({ password: await token() });
  t.equal(second.code, 0, second.stderr);
  // Invalid tokens do not consume the count.
  await db.rejectNext(1);
  await psql({ password: 'garbage' });
  t.match((await psql({ password: await token() })).stderr, PAM_FAILED);
  t.equal(await lastReason(), 'forced');
  t.equal((await psql({ password: await token() })).code, 0);
});

t.test('session-token credentials', async (t) => {
  const key = randomKey(randomBytes(15).toString('base64')); // 20 chars, may contain + and /
  await db.trustKey(key);
  const ok = await psql({ password: await token({ key }) });
  t.equal(ok.code, 0, ok.stderr);
  const cases: [string, AwsKey, string][] = [
    // The first character changed (a random token may already start with 'X').
    [
      'wrong session token',
      { ...key, sessionToken: (key.sessionToken!.startsWith('X') ? 'Y' : 'X') + key.sessionToken!.slice(1) },
      'wrong X-Amz-Security-Token',
    ],
    ['missing session token', { accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey }, 'missing X-Amz-Security-Token'],
    ['session token on a long-term key', { ...db.key, sessionToken: 'abc' }, 'unexpected X-Amz-Security-Token'],
  ];
  for (const [name, k, reason] of cases) {
    const r = await psql({ password: await token({ key: k }) });
    t.match(r.stderr, PAM_FAILED, name);
    t.equal(await lastReason(), reason, name);
  }
  // pam_exec passes at most 511 bytes of password: real (~1 KB) STS session
  // tokens cannot be checked this way, and the checker says so.
  const long = randomKey('A'.repeat(200));
  await db.trustKey(long);
  const r = await psql({ password: await token({ key: long }) });
  t.match(r.stderr, PAM_FAILED);
  t.match(await lastReason(), /pam_exec truncates at 511/);
});

t.test('checker log records key ids, never secrets', async (t) => {
  const entries = await db.checkerLog();
  t.ok(entries.length > 20);
  t.ok(
    entries.some(
      (e) =>
        e.ok && e.accessKeyId === db.key.accessKeyId && e.user === 'iam_user' && e.host === `${ENDPOINT}:${db.port}` && e.region === REGION,
    ),
  );
  t.ok(entries.some((e) => e.ok && e.accessKeyId.startsWith('ASIA')));
  const raw = readFileSync(join(db.dir, 'checker', 'checker.log'), 'utf8');
  const secrets = new Set<string>();
  for (const tok of usedTokens) {
    secrets.add(tok);
    const params = new URLSearchParams(tok.slice(tok.indexOf('?') + 1));
    for (const name of ['X-Amz-Signature', 'X-Amz-Security-Token']) {
      const v = params.get(name);
      if (v) secrets.add(v);
    }
  }
  t.ok(secrets.size > 20);
  t.same(
    [...secrets].filter((s) => s.length >= 8 && raw.includes(s)),
    [],
    'no token, signature or session token in checker.log',
  );
  t.notOk(raw.includes(db.key.secretAccessKey));
  t.notOk(/[0-9a-f]{64}/.test(raw), 'no signature-like hex');
});

t.test('login latency', async (t) => {
  const n = 10;
  let t0 = Date.now();
  for (let i = 0; i < n; i++) t.equal((await psql({ password: await token() })).code, 0, 'IAM login');
  const iam = (Date.now() - t0) / n;
  t0 = Date.now();
  for (let i = 0; i < n; i++) t.equal((await psql({ user: 'pw_user', password: 'pw_secret' })).code, 0, 'SCRAM login');
  const scram = (Date.now() - t0) / n;
  t.comment(`per psql login: IAM ${iam.toFixed(0)} ms, SCRAM ${scram.toFixed(0)} ms`);
  // Concurrent logins: pam_exec spawns one checker per login.
  t0 = Date.now();
  const results = await Promise.all(Array.from({ length: 20 }, async () => psql({ password: await token() })));
  t.same(
    results.map((r) => r.code),
    Array(20).fill(0),
  );
  t.comment(`20 concurrent IAM logins: ${Date.now() - t0} ms`);
});

t.test('stop and start', async (t) => {
  await db.stop();
  const down = await psql({ password: await token() });
  t.match(down.stderr, /Connection refused|could not connect/);
  await db.start();
  const up = await psql({ password: await token() });
  t.equal(up.code, 0, up.stderr);
});

t.test('destroy leaves nothing behind', async (t) => {
  const other = await startTestDb();
  const pamFiles = (): string[] =>
    readdirSync('/etc/pam.d').filter(
      (f) => f.startsWith('pg-iam-test-') && readFileSync(join('/etc/pam.d', f), 'utf8').includes(other.dir),
    );
  t.equal(pamFiles().length, 1);
  t.not(other.port, db.port);
  await other.destroy();
  await other.destroy(); // idempotent
  t.notOk(existsSync(other.dir));
  t.same(pamFiles(), []);
  const refused = await new Promise<boolean>((resolve) => {
    const s = createConnection(other.port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });
  t.ok(refused, 'port closed');
  let scopedDir: string;
  {
    await using scoped = await startTestDb();
    scopedDir = scoped.dir;
    t.equal(await scoped.admin('SELECT 1'), '1');
  }
  t.notOk(existsSync(scopedDir), 'await using destroys');
});
