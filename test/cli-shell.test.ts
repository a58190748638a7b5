// The shell workflow end to end against the test database: `token`, `run -- CMD` and `doctor`, as
// separate processes with the real SDK (environment keys; STS on a loopback stand-in).
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { BIN, cleanAwsEnv, runCli } from './support/cli.js';
import { runPg } from './support/proxy.js';
import { dbWithSts } from './support/aws/sts.js';

const { db, sts } = await dbWithSts(t);

const ENDPOINT = `${db.endpoint}:${db.port}`;
const env = (extra: Record<string, string> = {}) =>
  cleanAwsEnv(db.dir, {
    AWS_ACCESS_KEY_ID: db.key.accessKeyId,
    AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey,
    AWS_ENDPOINT_URL_STS: sts.url,
    ...extra,
  });
const noKeys = () => cleanAwsEnv(db.dir, { AWS_ENDPOINT_URL_STS: sts.url });
const dial = ['--connect-to', `127.0.0.1:${db.port}`, '--ca-file', db.caFile];

t.test('token: one line on stdout that the database accepts as the password', async (t) => {
  const r = await runCli(['token', ENDPOINT, '--user', 'iam_user'], env());
  t.equal(r.code, 0, r.stderr);
  // A boolean, not a match: a failing match would print the token in its diff.
  t.ok(
    new RegExp(`^${db.endpoint.replaceAll('.', '\\.')}:${db.port}/\\?Action=connect&DBUser=iam_user&X-Amz-[^\\s]+\\n$`).test(r.stdout),
    'one presigned URL for the endpoint and user, and a newline',
  );
  t.equal(r.stderr, '', 'nothing else printed');
  const login = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: db.endpoint,
    PGHOSTADDR: '127.0.0.1',
    PGPORT: String(db.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
    PGPASSWORD: r.stdout.trim(),
    PGSSLMODE: 'verify-full',
    PGSSLROOTCERT: db.caFile,
  });
  t.equal(login.stdout.trim(), 'iam_user', `a drop-in for aws rds generate-db-auth-token: ${login.stderr}`);

  const none = await runCli(['token', ENDPOINT, '--user', 'iam_user'], noKeys());
  t.equal(none.code, 1);
  t.equal(none.stdout, '', 'no token, nothing on stdout');
  t.match(
    none.stderr,
    /^pg-iam-proxy: cannot sign a token: no AWS credentials for the default credential chain.*\n {2}sources tried: environment variables/s,
  );
  t.match(await runCli(['token', ENDPOINT], env()), {
    code: 2,
    stderr:
      /^pg-iam-proxy: token needs --user \(the DB user the token is for\): pg-iam-proxy token ENDPOINT --user USER, or set PG_IAM_PROXY_USER\n$/,
  });
  t.match(await runCli(['doctor', ENDPOINT], env()), {
    code: 2,
    stderr: /^pg-iam-proxy: doctor needs --user \(the DB user to log in as\): pg-iam-proxy doctor ENDPOINT --user USER/,
  });
});

t.test('run: psql, pg_dump and a shell get a private socket, and run exits with their status', async (t) => {
  const psql = await runCli(
    ['run', ENDPOINT, ...dial, '--user', 'iam_user', '--', 'psql', '-X', '-At', '-d', 'orders', '-c', 'SELECT current_user'],
    env(),
  );
  t.equal(psql.code, 0, psql.stderr);
  t.equal(psql.stdout, 'iam_user\n', "stdout is the command's alone");
  t.equal(psql.stderr, '', 'the proxy is quiet at warn');

  const dump = await runCli(
    ['run', ENDPOINT, ...dial, '--user', 'iam_user', '--', 'pg_dump', '--schema-only', '-t', 'items', 'orders'],
    env(),
  );
  t.equal(dump.code, 0, dump.stderr);
  t.match(dump.stdout, /CREATE TABLE public\.items/);

  const shell = await runCli(
    [
      'run',
      ENDPOINT,
      ...dial,
      '--user',
      'iam_user',
      '--',
      'sh',
      '-c',
      'echo "$PGHOST $PGPORT $PGUSER $PGSSLMODE"; stat -c %a "$PGHOST" "$PGHOST/.s.PGSQL.$PGPORT"; exit 7',
    ],
    env({ PGHOSTADDR: '10.9.9.9' }),
  );
  t.equal(shell.code, 7, 'the exit status passes through');
  const [vars, dirMode, socketMode] = shell.stdout.trim().split('\n');
  const [host, port, user, sslmode] = vars!.split(' ');
  t.match(host, /\/pg-iam-proxy-[^/]+$/);
  t.same([port, user, sslmode], ['5432', 'iam_user', 'disable']);
  t.same([dirMode, socketMode], ['700', '600'], 'only this user can reach the socket');
  t.notOk(existsSync(host!), 'the private directory is removed afterwards');

  t.equal((await runCli(['run', ENDPOINT, ...dial, '--', 'sh', '-c', 'kill -TERM $$'], env())).code, 143, 'a death by SIGTERM is 128 + 15');
  const missing = await runCli(['run', ENDPOINT, ...dial, '--', 'no-such-command-xyz'], env());
  t.match(missing, { code: 127, stderr: /cannot run no-such-command-xyz: command not found/ });
  t.match(await runCli(['run', ENDPOINT, ...dial], env()), { code: 2, stderr: /run: no command given/ });
});

t.test('run: the command gets no cloud credentials, unless --keep-aws-env', async (t) => {
  // AWS_SECURITY_TOKEN stands in for a session token: the SDK ignores it, so the proxy signs as before.
  // AZURE_CLIENT_SECRET without AZURE_CLIENT_ID and a tenant: no Azure credential the proxy would use.
  const environment = env({
    AWS_SECURITY_TOKEN: 'legacy-session-token',
    AZURE_CLIENT_SECRET: 'azure-secret',
    PG_IAM_PROXY_LOG_LEVEL: 'warn',
  });
  const credentials = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SECURITY_TOKEN', 'AZURE_CLIENT_SECRET'];
  // Names only, so a failing assertion never prints a secret.
  const names = (stdout: string) => stdout.split('\n').map((line) => line.slice(0, line.indexOf('=')));

  const withheld = await runCli(['run', ENDPOINT, ...dial, '--user', 'iam_user', '--', 'sh', '-c', 'env'], environment);
  t.equal(withheld.code, 0, withheld.stderr);
  t.notOk(withheld.stdout.includes(db.key.secretAccessKey), "the secret key is not in the command's environment");
  t.same(
    names(withheld.stdout).filter((n) => credentials.includes(n)),
    [],
    'no credential variable at all',
  );
  t.same(
    ['AWS_ENDPOINT_URL_STS', 'AWS_CONFIG_FILE', 'PG_IAM_PROXY_LOG_LEVEL', 'PGHOST'].filter((n) => !names(withheld.stdout).includes(n)),
    [],
    'what only configures stays, and PGHOST is set',
  );
  t.notOk(withheld.stderr.includes(db.key.secretAccessKey), 'nor in what the proxy says');

  const kept = await runCli(['run', ENDPOINT, ...dial, '--user', 'iam_user', '--keep-aws-env', '--', 'sh', '-c', 'env'], environment);
  t.equal(kept.code, 0, kept.stderr);
  t.ok(
    kept.stdout.split('\n').includes(`AWS_SECRET_ACCESS_KEY=${db.key.secretAccessKey}`),
    'with --keep-aws-env the command has the secret key',
  );
  t.same(
    credentials.filter((n) => !names(kept.stdout).includes(n)),
    [],
    'and every credential variable it was given',
  );
});

t.test('run: a SIGTERM for the proxy is passed to the command', async (t) => {
  const child = spawn(
    process.execPath,
    [BIN, 'run', ENDPOINT, ...dial, '--', 'sh', '-c', 'trap "exit 9" TERM; echo ready; while :; do sleep 0.05; done'],
    { env: env() },
  );
  const [first] = await once(child.stdout, 'data');
  t.equal(String(first).trim(), 'ready');
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  t.equal(code, 9, "the command's own handler ran, and its status came back");
});

t.test('run on a terminal: Ctrl-C cancels the query in psql and does not kill the proxy', async (t) => {
  const cmd = [
    process.execPath,
    BIN,
    'run',
    ENDPOINT,
    ...dial,
    '--user',
    'iam_user',
    '--',
    'psql',
    '-X',
    '-d',
    'orders',
    '-c',
    'SELECT pg_sleep(60)',
  ]
    .map((s) => `'${s.replaceAll("'", `'\\''`)}'`)
    .join(' ');
  // `exec`: script runs the command through $SHELL, and a non-interactive dash left waiting in the
  // foreground group would itself die of the Ctrl-C (CI runs with SHELL=/bin/sh).
  const tty = spawn('script', ['-qefc', `exec ${cmd}`, '/dev/null'], { env: env(), stdio: ['pipe', 'pipe', 'ignore'] });
  let screen = '';
  tty.stdout.on('data', (d) => (screen += String(d)));
  // Wait for the query to be running on the server.
  for (;;) {
    const rows = await db.admin("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'");
    if (rows.trim() === '1') break;
  }
  tty.stdin.write('\x03');
  const [code] = await once(tty, 'exit');
  t.match(screen, /canceling statement due to user request/);
  t.equal(code, 1, "psql's status after a cancelled query, through run");
});

const doctor = async (args: string[], environment = env()) => {
  const r = await runCli(['doctor', ...args, '--json'], environment);
  const report = JSON.parse(r.stdout) as { ok: boolean; checks: Array<{ id: string; status: string; found: string; fix?: string }> };
  const byId = Object.fromEntries(report.checks.map((c) => [c.id, c]));
  return { code: r.code, report, byId };
};

t.test('doctor: the healthy chain passes every check and exits 0', async (t) => {
  const { code, report, byId } = await doctor([ENDPOINT, ...dial, '--user', 'iam_user', '--database', 'orders']);
  t.equal(code, 0);
  t.equal(report.ok, true);
  t.same(
    report.checks.map((c) => [c.id, c.status]),
    ['credentials', 'endpoint', 'dns', 'tcp', 'tls', 'certificate', 'clock', 'token', 'login', 'pooling'].map((id) => [id, 'pass']),
  );
  t.match(byId.pooling!.found, /pooling is off/);
  t.match(
    byId.credentials!.found,
    /environment variables \(AWS_ACCESS_KEY_ID\), access key AKIA\w+; signs as arn:aws:iam::123456789012:user\/ci \(account 123456789012\)/,
  );
  t.match(byId.endpoint!.found, /region us-east-1 \(from the endpoint name\)/);
  t.match(byId.certificate!.found, new RegExp(`names ${db.endpoint.replaceAll('.', '\\.')}`));
  t.match(byId.token!.found, new RegExp(`for ${db.endpoint.replaceAll('.', '\\.')}:${db.port}, region us-east-1, user "iam_user"`));
  t.match(byId.login!.found, /logged in as "iam_user" to database "orders" over verified TLS/);
  t.notMatch(JSON.stringify(report), /X-Amz-Signature/, 'never the token');

  const human = await runCli(['doctor', ENDPOINT, ...dial, '--user', 'iam_user', '--database', 'orders'], env());
  t.equal(human.code, 0);
  t.match(
    human.stdout,
    /^pg-iam-proxy doctor: .*\n\nPASS {2}AWS credentials and identity\n {6}the default credential chain: .*The login succeeded/s,
  );
  t.notMatch(human.stdout, /\x1b\[/, 'no colour off a terminal');
});

t.test('doctor: pool sizes against the server (max_connections, connections open now)', async (t) => {
  const orders = [ENDPOINT, ...dial, '--user', 'iam_user', '--database', 'orders'];
  const fits = await doctor([...orders, '--pool-mode', 'transaction', '--pool-size', '5']);
  t.equal(fits.code, 0);
  t.match(fits.byId.pooling, {
    status: 'pass',
    found:
      /--pool-mode transaction, --pool-size 5, --max-server-connections 10; .*max_connections \d+ .*session SET \(but of the settings the server reports\), LISTEN/,
  });
  const over = await doctor([...orders, '--pool-mode', 'session', '--max-server-connections', '5000']);
  t.equal(over.code, 0, 'a warning, not a failure: the login works');
  t.match(over.byId.pooling, { status: 'warn', fix: /may open 5000 servers and the server has room for \d+ more/ });
});

t.test('doctor: each failure found, explained, and the rest skipped', async (t) => {
  const outsider = await doctor([ENDPOINT, ...dial, '--user', 'pw_user']);
  t.equal(outsider.code, 1);
  t.match(outsider.byId.login, { status: 'fail', found: /not set up for IAM/, fix: /GRANT rds_iam/ });

  const missingRole = await doctor([ENDPOINT, ...dial, '--user', 'nobody_here']);
  t.match(missingRole.byId.login, { status: 'fail', fix: /CREATE USER/ });

  const wrongDb = await doctor([ENDPOINT, ...dial, '--user', 'iam_user', '--database', 'nope']);
  t.match(wrongDb.byId.login, { status: 'fail', found: /database "nope" does not exist/, fix: /--database/ });

  await db.rejectNext(1);
  const rejected = await doctor([ENDPOINT, ...dial, '--user', 'iam_user']);
  t.match(rejected.byId.login, {
    status: 'fail',
    found: /rejected the IAM token: PAM authentication failed/,
    fix: /rds-db:connect on arn:aws:rds-db:us-east-1:123456789012:dbuser:DBI-RESOURCE-ID\/iam_user/,
  });

  const untrusted = await doctor([ENDPOINT, '--connect-to', `127.0.0.1:${db.port}`, '--ca-file', db.otherCaFile, '--user', 'iam_user']);
  t.match(untrusted.byId.certificate, { status: 'fail', found: /does not chain to/, fix: /global-bundle\.pem/ });
  t.equal(untrusted.byId.clock!.status, 'skip', 'later checks are skipped after a failure that makes them meaningless');
  t.equal(untrusted.byId.login!.status, 'skip');

  const bundled = await doctor([ENDPOINT, '--connect-to', `127.0.0.1:${db.port}`, '--user', 'iam_user']);
  t.match(bundled.byId.certificate, { status: 'fail', fix: /bundled CAs lack regions.*--ca-file global-bundle\.pem/ });

  const otherName = await doctor([`other.abc123xyz.us-east-1.rds.amazonaws.com:${db.port}`, ...dial, '--user', 'iam_user']);
  t.match(otherName.byId.certificate, { status: 'fail', found: /does not match host name other\.abc123xyz/, fix: /exact RDS endpoint/ });

  const ip = await doctor([`127.0.0.1:${db.port}`, '--ca-file', db.caFile, '--region', 'us-east-1', '--user', 'iam_user']);
  t.match(ip.byId.endpoint, { status: 'fail', found: /is an IP address/, fix: /Sign for the exact RDS endpoint/ });

  const custom = await doctor([`db.corp.example:${db.port}`, ...dial, '--region', 'us-east-1', '--user', 'iam_user']);
  t.match(custom.byId.endpoint, { status: 'warn', fix: /Sign for the exact RDS endpoint/ });

  const closed = await doctor([ENDPOINT, '--connect-to', '127.0.0.1:9', '--ca-file', db.caFile, '--user', 'iam_user']);
  t.match(closed.byId.tcp, { status: 'fail', found: /ECONNREFUSED/, fix: /security group/ });

  const nokeys = await doctor([ENDPOINT, ...dial, '--user', 'iam_user'], noKeys());
  t.equal(nokeys.code, 1);
  t.match(nokeys.byId.credentials, { status: 'fail', found: /no AWS credentials.*Sources tried: environment variables/ });
  // What needs no credentials is still checked: the name, DNS, TCP, TLS and the certificate.
  t.same(
    nokeys.report.checks.map((c) => [c.id, c.status]),
    [
      ['credentials', 'fail'],
      ['endpoint', 'pass'],
      ['dns', 'pass'],
      ['tcp', 'pass'],
      ['tls', 'pass'],
      ['certificate', 'pass'],
      ['clock', 'skip'],
      ['token', 'skip'],
      ['login', 'skip'],
      ['pooling', 'skip'],
    ],
  );
  t.match(nokeys.byId.login, { found: /not checked: it needs AWS credentials/ });

  const nosts = await doctor(
    [ENDPOINT, ...dial, '--user', 'iam_user', '--database', 'orders'],
    env({ AWS_ENDPOINT_URL_STS: 'http://127.0.0.1:9' }),
  );
  t.equal(nosts.code, 0, 'an unreachable STS is a warning; the login decides');
  t.match(nosts.byId.credentials, { status: 'warn', found: /sts:GetCallerIdentity did not answer/ });
  t.match(nosts.byId.clock, { status: 'warn' });
});
