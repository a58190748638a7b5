// What the benchmark measures against, started side by side: the test database (IAM tokens checked over
// PAM), the proxy (the real CLI in its own process) and pgbouncer from Debian's packages (installed when
// absent) in session mode with TLS to the same database. Shared by `npm run bench` and `npm run bench:stand`.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Signer } from '@aws-sdk/rds-signer';
import { startTestDb, type TestDb } from '../test/support/testdb.js';
import { runPg, closedPort } from '../test/support/proxy.js';
import { cleanAwsEnv, serveArgs, startCli, type StartedCli } from '../test/support/cli.js';

export type Target = 'direct' | 'proxy' | 'pgbouncer';

export interface Targets {
  readonly db: TestDb;
  /** The environment the proxy's CLI runs with (the database's access key). */
  readonly env: NodeJS.ProcessEnv;
  readonly proxy: StartedCli;
  readonly pids: Record<'proxy' | 'pgbouncer', number>;
  /** libpq settings for each target. */
  pgEnv(target: Target): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

export const say = (text: string) => process.stderr.write(`bench: ${text}\n`);

/** `proxyArgs` are added to the proxy's command line (e.g. to try an option). */
export async function startTargets(proxyArgs: readonly string[] = []): Promise<Targets> {
  if (!existsSync('/usr/sbin/pgbouncer')) {
    say('installing pgbouncer from Debian');
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'pgbouncer'], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  }
  const db = await startTestDb();
  say('preparing pgbench tables and a bulk table');
  execFileSync(
    '/usr/lib/postgresql/15/bin/pgbench',
    ['-i', '-q', '-s', '5', '-h', db.socketDir, '-p', String(db.port), '-U', 'postgres', 'orders'],
    { stdio: 'ignore' },
  );
  await db.admin(
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO iam_user; CREATE TABLE bulk (x text); GRANT INSERT, SELECT, TRUNCATE ON bulk TO iam_user;',
    'orders',
  );

  const token = () =>
    new Signer({ hostname: db.endpoint, port: db.port, region: db.region, username: 'iam_user', credentials: db.key }).getAuthToken();
  const env = cleanAwsEnv(db.dir, { AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey });

  const proxy = await startCli(serveArgs(db, '--client-tls', 'off', ...proxyArgs), env);

  // pgbouncer: session mode, TLS to the server (verify-ca: it dials 127.0.0.1, which the certificate does
  // not name), the token as the server password (valid 15 minutes: longer than a run), trust locally.
  const bouncerDir = mkdtempSync('/tmp/pgbouncer-bench-');
  const bouncerPort = await closedPort();
  writeFileSync(join(bouncerDir, 'users.txt'), '"iam_user" ""\n');
  writeFileSync(
    join(bouncerDir, 'pgbouncer.ini'),
    `[databases]
orders = host=127.0.0.1 port=${db.port} dbname=orders user=iam_user password=${await token()}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${bouncerPort}
unix_socket_dir =
auth_type = trust
auth_file = ${join(bouncerDir, 'users.txt')}
pool_mode = session
max_client_conn = 500
default_pool_size = 100
server_tls_sslmode = verify-ca
server_tls_ca_file = ${db.caFile}
logfile = ${join(bouncerDir, 'pgbouncer.log')}
pidfile = ${join(bouncerDir, 'pgbouncer.pid')}
`,
    { mode: 0o600 }, // it holds a live token: its owner (postgres, below) alone reads it
  );
  execFileSync('chown', ['-R', 'postgres', bouncerDir]);
  const bouncer = spawn('/usr/sbin/runuser', ['-u', 'postgres', '--', '/usr/sbin/pgbouncer', join(bouncerDir, 'pgbouncer.ini')], {
    stdio: 'ignore',
  });
  for (;;) {
    if (bouncer.exitCode !== null) throw new Error(`pgbouncer exited (${bouncer.exitCode}): see ${join(bouncerDir, 'pgbouncer.log')}`);
    const probe = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], {
      PGHOST: '127.0.0.1',
      PGPORT: String(bouncerPort),
      PGUSER: 'iam_user',
      PGDATABASE: 'orders',
    });
    if (probe.stdout.trim() === '1') break;
  }
  const bouncerPid = Number(readFileSync(join(bouncerDir, 'pgbouncer.pid'), 'utf8').trim());

  const settings: Record<Target, () => Promise<Record<string, string>>> = {
    direct: async () => ({
      PGHOST: db.endpoint,
      PGHOSTADDR: '127.0.0.1',
      PGPORT: String(db.port),
      PGSSLMODE: 'verify-full',
      PGSSLROOTCERT: db.caFile,
      PGPASSWORD: await token(),
      PGUSER: 'iam_user',
      PGDATABASE: 'orders',
    }),
    proxy: async () => ({
      PGHOST: '127.0.0.1',
      PGPORT: String(proxy.port),
      PGSSLMODE: 'disable',
      PGUSER: 'iam_user',
      PGDATABASE: 'orders',
    }),
    pgbouncer: async () => ({
      PGHOST: '127.0.0.1',
      PGPORT: String(bouncerPort),
      PGSSLMODE: 'disable',
      PGUSER: 'iam_user',
      PGDATABASE: 'orders',
    }),
  };
  return {
    db,
    env,
    proxy,
    pids: { proxy: proxy.child.pid!, pgbouncer: bouncerPid },
    pgEnv: (target) => settings[target](),
    async stop() {
      process.kill(bouncerPid, 'SIGTERM');
      bouncer.kill('SIGTERM');
      proxy.child.kill('SIGTERM');
      await proxy.exit;
      rmSync(bouncerDir, { recursive: true, force: true });
      await db.destroy();
    },
  };
}
