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
  /** A fresh IAM token for the test database's iam_user (what pgbouncer is given as its password). */
  token(): Promise<string>;
  /** "PgBouncer 1.24.1" */
  readonly bouncerVersion: string;
  stop(): Promise<void>;
}

export const say = (text: string) => process.stderr.write(`bench: ${text}\n`);

/**
 * `count` of `open()`, `size` at a time: many logins at once keep the test database's PAM token checks
 * past the login timeout.
 */
export async function inBatches<T>(count: number, size: number, open: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < count; i += size) out.push(...(await Promise.all(Array.from({ length: Math.min(size, count - i) }, open))));
  return out;
}

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

  const bouncer = await startBouncer(db, await token(), { mode: 'session', poolSize: 100 });
  const bouncerPort = bouncer.port;
  const bouncerPid = bouncer.pid;

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
    token,
    bouncerVersion: bouncer.version,
    async stop() {
      bouncer.stop();
      proxy.child.kill('SIGTERM');
      await proxy.exit;
      await db.destroy();
    },
  };
}

export interface Bouncer {
  readonly port: number;
  readonly pid: number;
  /** "PgBouncer 1.18.0" */
  readonly version: string;
  /** Whether it tracks named prepared statements in transaction mode (1.21+, max_prepared_statements). */
  readonly preparedStatements: boolean;
  stop(): void;
}

/**
 * pgbouncer with TLS to the server (verify-ca: it dials 127.0.0.1, which the certificate does not name),
 * an IAM token as the server password (valid 15 minutes: longer than a run), trust locally. Debian's
 * package by default; PGBOUNCER_ROOT names a root file system holding a newer one (e.g. made with
 * `mmdebstrap --variant=minbase --include=pgbouncer trixie DIR`: 1.24, with max_prepared_statements),
 * run there with chroot.
 */
export async function startBouncer(
  db: TestDb,
  token: string,
  options: { mode: 'session' | 'transaction'; poolSize: number; maxPreparedStatements?: number },
): Promise<Bouncer> {
  const root = process.env.PGBOUNCER_ROOT ?? '';
  // This machine's postgres user, by number: the root file system's own may have other ids.
  const userspec = `--userspec=${execFileSync('id', ['-u', 'postgres']).toString().trim()}:${execFileSync('id', ['-g', 'postgres']).toString().trim()}`;
  const run = (args: string[]) =>
    root ? execFileSync('chroot', [userspec, root, ...args]) : execFileSync('/usr/sbin/runuser', ['-u', 'postgres', '--', ...args]);
  const version = run(['/usr/sbin/pgbouncer', '--version']).toString().split('\n')[0]!.trim();
  const [major, minor] = (/(\d+)\.(\d+)/.exec(version) ?? ['', '0', '0']).slice(1).map(Number) as [number, number];
  const preparedStatements = major > 1 || minor >= 21;
  // Inside the root file system when there is one: pgbouncer sees only that.
  const dir = mkdtempSync(join(root || '/', 'tmp', 'pgbouncer-bench-'));
  const inside = (path: string) => (root ? path.slice(root.length) : path);
  writeFileSync(join(dir, 'ca.pem'), readFileSync(db.caFile));
  const port = await closedPort();
  writeFileSync(join(dir, 'users.txt'), '"iam_user" ""\n');
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    `[databases]
orders = host=127.0.0.1 port=${db.port} dbname=orders user=iam_user password=${token}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = trust
auth_file = ${inside(join(dir, 'users.txt'))}
pool_mode = ${options.mode}
max_client_conn = 2000
default_pool_size = ${options.poolSize}
${preparedStatements ? `max_prepared_statements = ${options.maxPreparedStatements ?? 0}` : ''}
server_tls_sslmode = verify-ca
server_tls_ca_file = ${inside(join(dir, 'ca.pem'))}
logfile = ${inside(join(dir, 'pgbouncer.log'))}
pidfile = ${inside(join(dir, 'pgbouncer.pid'))}
`,
    { mode: 0o600 }, // it holds a live token: its owner (postgres, below) alone reads it
  );
  execFileSync('chown', ['-R', 'postgres', dir]);
  const ini = inside(join(dir, 'pgbouncer.ini'));
  const child = root
    ? spawn('chroot', [userspec, root, '/usr/sbin/pgbouncer', ini], { stdio: 'ignore' })
    : spawn('/usr/sbin/runuser', ['-u', 'postgres', '--', '/usr/sbin/pgbouncer', ini], { stdio: 'ignore' });
  for (;;) {
    if (child.exitCode !== null) throw new Error(`pgbouncer exited (${child.exitCode}): see ${join(dir, 'pgbouncer.log')}`);
    const probe = await runPg('psql', ['-X', '-At', '-c', 'SELECT 1'], {
      PGHOST: '127.0.0.1',
      PGPORT: String(port),
      PGUSER: 'iam_user',
      PGDATABASE: 'orders',
    });
    if (probe.stdout.trim() === '1') break;
  }
  const pid = Number(readFileSync(join(dir, 'pgbouncer.pid'), 'utf8').trim());
  return {
    port,
    pid,
    version,
    preparedStatements,
    stop() {
      process.kill(pid, 'SIGTERM');
      child.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
