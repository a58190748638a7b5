// A real PostgreSQL 15 that authenticates like an AWS RDS instance with IAM
// database authentication enabled:
//
// - TLS only (no plain `host` lines), with a server certificate for a fake
//   RDS endpoint name signed by a per-database test CA;
// - members of `rds_iam` must present a valid IAM auth token as password,
//   verified by token-checker (via PAM/pam_exec) exactly as RDS would;
// - everybody else uses SCRAM passwords;
// - the superuser `postgres` is only reachable over the unix socket (trust).
//
// Must run as root: initdb/postgres refuse root, so every PostgreSQL binary is
// run as the `postgres` OS user via runuser, and the PAM service file has to
// be written to /etc/pam.d.

import { execFile, spawnSync } from 'node:child_process';
import { randomBytes, webcrypto } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { appendFile, chmod, chown, copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import 'reflect-metadata'; // @peculiar/x509 (through tsyringe) needs the Reflect metadata API
import * as x509 from '@peculiar/x509';

export const ENDPOINT = 'mydb.abc123xyz.us-east-1.rds.amazonaws.com';
export const REGION = 'us-east-1';
/** The same database as an Azure Database for PostgreSQL server: its certificate names this too. */
export const AZURE_ENDPOINT = 'mydb.postgres.database.azure.com';
/** An Entra ID user principal, set up as pgaadauth_create_principal would (a PAM user here). */
export const AZURE_USER = 'alice@example.com';
/** The same database as a Cloud SQL instance: its connection name, and the DNS name its certificate carries. */
export const CLOUD_SQL_NAME = 'my-project:us-central1:myinstance';
export const CLOUD_SQL_DNS = 'myinstance.abc123def.us-central1.sql.goog';
/** A Cloud SQL IAM service account user (its email less .gserviceaccount.com). */
export const GCP_USER = 'app-sa@my-project.iam';

export interface AwsKey {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** One line of checker.log: one IAM login attempt as seen by the token checker. */
export interface CheckerEntry {
  time: string;
  user: string;
  accessKeyId: string;
  host: string;
  region: string;
  ok: boolean;
  reason: string;
}

export interface TestDb {
  /** ENDPOINT: the name in the server certificate and in signed tokens. */
  readonly endpoint: string;
  /** TCP port on 127.0.0.1; also the port that tokens must be signed for. */
  readonly port: number;
  readonly region: string;
  /** PEM file of the test CA that signed the server certificate. */
  readonly caFile: string;
  readonly caPem: string;
  /** PEM file of an unrelated CA, for "untrusted server certificate" tests. */
  readonly otherCaFile: string;
  /** Unix socket directory; superuser `postgres` connects there with trust. */
  readonly socketDir: string;
  /** A long-term key pair (AKIA...) that the checker trusts. */
  readonly key: AwsKey;
  /** The HMAC key of the test JWTs the checker accepts as Entra ID and Cloud SQL tokens. */
  readonly jwtKey: Buffer;
  /**
   * Serve another certificate (restarting the server): 'names' (the default: the RDS, Azure and Cloud SQL
   * DNS names) or 'cloudsql-cn' (CN = my-project:myinstance and no names, as a legacy Cloud SQL instance).
   */
  useCertificate(kind: 'names' | 'cloudsql-cn'): Promise<void>;
  /** The temp dir holding everything for this database. */
  readonly dir: string;
  /**
   * Runs SQL (may hold several statements) through psql -X -q -At as
   * `postgres` over the unix socket. Resolves with stdout minus trailing
   * newlines; rejects with psql's stderr.
   */
  admin(sql: string, db?: string): Promise<string>;
  /** Makes the checker accept tokens signed with this key (as of the next login). */
  trustKey(key: AwsKey): Promise<void>;
  /** The checker rejects the next n otherwise valid IAM logins (reason "forced"). */
  rejectNext(n: number): Promise<void>;
  checkerLog(): Promise<CheckerEntry[]>;
  /** pg_ctl stop -m fast. The database can be started again. */
  stop(): Promise<void>;
  /** Starts the database again on the same port. */
  start(): Promise<void>;
  /** Stops the server and removes the temp dir and the PAM service file. Idempotent. */
  destroy(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const PG_BIN = '/usr/lib/postgresql/15/bin';
const PAM_DIR = '/etc/pam.d';
const RUNUSER = '/usr/sbin/runuser';

// Everything run as postgres gets this environment rather than ours, so that
// PGPASSWORD, PGSSLMODE & co. from the test process cannot leak in.
const PG_ENV: NodeJS.ProcessEnv = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', TZ: 'UTC' };

/** Roles, database and data every test database starts with. */
const SETUP_SQL = `
CREATE ROLE rds_iam;
CREATE USER iam_user;
GRANT rds_iam TO iam_user;
CREATE USER "MixedCase_User";
GRANT rds_iam TO "MixedCase_User";
CREATE USER pw_user PASSWORD 'pw_secret';
CREATE USER trust_user;
CREATE USER "alice@example.com";
GRANT rds_iam TO "alice@example.com";
CREATE USER "app-sa@my-project.iam";
GRANT rds_iam TO "app-sa@my-project.iam";
CREATE DATABASE orders;
GRANT CONNECT, TEMPORARY ON DATABASE orders TO iam_user, "MixedCase_User", pw_user, trust_user, "alice@example.com", "app-sa@my-project.iam";
\\connect orders
GRANT USAGE ON SCHEMA public TO iam_user, "MixedCase_User", pw_user, "alice@example.com", "app-sa@my-project.iam";
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items VALUES (1, 'apple'), (2, 'banana'), (3, 'cherry');
GRANT SELECT ON items TO iam_user, "MixedCase_User", pw_user, "alice@example.com", "app-sa@my-project.iam";
`;

/** <checker dir>/config.json, as read by token-checker.ts. */
interface CheckerConfig {
  host: string;
  region: string;
  keys: Record<string, { secret: string; sessionToken?: string }>;
  jwtKey: string;
}

interface PostgresIds {
  uid: number;
  gid: number;
}

let postgresIds: PostgresIds | undefined;
let template: Promise<string> | undefined;
let templateDir: string | undefined;
/** Databases not yet destroyed, for the process-exit safety net. */
const live = new Set<{ dir: string; pgdata: string; pamFile: string }>();

/**
 * `diagnostics` (the differential soak's): every statement's parse, bind and execute in postgres.log, and a
 * core file in pgdata from a server process that crashes.
 */
export async function startTestDb(options: { diagnostics?: boolean } = {}): Promise<TestDb> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new Error(
      'startTestDb() must run as root: it runs PostgreSQL as the postgres OS user via runuser ' +
        'and installs a PAM service in /etc/pam.d',
    );
  }
  const ids = postgresUser();
  // A failed template build is not cached: the next call tries again.
  const templatePgdata = await (template ??= makeTemplate(ids).catch((err: unknown) => {
    template = undefined;
    throw err;
  }));

  const dir = await mkdtemp(join(tmpdir(), 'pg-iam-testdb-'));
  const pgdata = join(dir, 'pgdata');
  const checkerDir = join(dir, 'checker');
  const pamService = `pg-iam-test-${randomBytes(6).toString('hex')}`;
  const pamFile = join(PAM_DIR, pamService);
  const entry = { dir, pgdata, pamFile };
  live.add(entry);
  ensureExitHandler();

  let running = false;
  let destroyed: Promise<void> | undefined;
  const destroy = (): Promise<void> =>
    (destroyed ??= (async () => {
      if (running || existsSync(join(pgdata, 'postmaster.pid'))) await forceStop(pgdata);
      running = false;
      await rm(dir, { recursive: true, force: true });
      await rm(pamFile, { force: true });
      live.delete(entry);
    })());

  try {
    // postgres must be able to traverse the dir, read checker.mjs and the
    // certificates, and create the unix socket and its logs here.
    await chmod(dir, 0o755);
    await chown(dir, ids.uid, ids.gid);
    await run('cp', ['-a', '--reflink=auto', templatePgdata, pgdata]);

    const tls = await makeCertificates();
    const caFile = join(dir, 'ca.pem');
    const otherCaFile = join(dir, 'other-ca.pem');
    const certFile = join(dir, 'server.crt');
    const cnCertFile = join(dir, 'server-cn.crt');
    const keyFile = join(dir, 'server.key');
    await writeFile(caFile, tls.caPem);
    await writeFile(otherCaFile, tls.otherCaPem);
    await writeFile(certFile, tls.certPem);
    await writeFile(cnCertFile, tls.cnCertPem);
    await writeOwned(keyFile, tls.keyPem, ids, 0o600); // postgres refuses group/world-readable keys

    const checkerScript = join(dir, 'checker.mjs');
    await copyFile(checkerSource(), checkerScript);
    await chmod(checkerScript, 0o644);
    await mkdir(checkerDir, { mode: 0o700 });
    await chown(checkerDir, ids.uid, ids.gid);

    const key: AwsKey = { accessKeyId: `AKIA${randomId(16)}`, secretAccessKey: randomBytes(30).toString('base64') };
    const jwtKey = randomBytes(32);
    const config: CheckerConfig = {
      host: '',
      region: REGION,
      keys: { [key.accessKeyId]: { secret: key.secretAccessKey } },
      jwtKey: jwtKey.toString('base64'),
    };
    const writeConfig = (): Promise<void> => writeOwned(join(checkerDir, 'config.json'), JSON.stringify(config, null, 2), ids, 0o600);

    // pam_exec runs the checker with an empty environment, hence absolute paths.
    // Its `log=` captures the checker's stdout/stderr (crashes only; the
    // checker never prints tokens).
    await writeFile(
      pamFile,
      `# pg-iam-proxy test database ${dir}; removed by TestDb.destroy()\n` +
        `auth required pam_exec.so expose_authtok quiet log=${join(checkerDir, 'pam_exec.log')} ${process.execPath} ${checkerScript} ${checkerDir}\n` +
        'account required pam_permit.so\n',
      { mode: 0o644 },
    );

    // Exactly RDS-like: TLS only, IAM for rds_iam members, SCRAM for the rest.
    await writeOwned(
      join(pgdata, 'pg_hba.conf'),
      'local all postgres trust\n' +
        // A user let in without a password (trust; on RDS, a certificate or a trust rule): nothing to sign.
        'hostssl all trust_user 127.0.0.1/32 trust\n' +
        `hostssl all +rds_iam 127.0.0.1/32 pam pamservice=${pamService}\n` +
        'hostssl all all 127.0.0.1/32 scram-sha-256\n',
      ids,
      0o600,
    );
    await appendFile(join(pgdata, 'postgresql.conf'), "\ninclude = 'testdb.conf'\n");

    let servedCert = certFile;
    const writeServerConfig = (port: number): Promise<void> =>
      writeOwned(
        join(pgdata, 'testdb.conf'),
        [
          "listen_addresses = '127.0.0.1'",
          `port = ${port}`,
          `unix_socket_directories = '${dir}'`,
          'ssl = on',
          `ssl_cert_file = '${servedCert}'`,
          `ssl_key_file = '${keyFile}'`,
          // Throwaway data: durability costs startup and test time for nothing.
          'fsync = off',
          'synchronous_commit = off',
          'full_page_writes = off',
          'max_connections = 200',
          "password_encryption = 'scram-sha-256'",
          'log_connections = on',
          ...(options.diagnostics ? ['log_min_duration_statement = 0'] : []),
          '',
        ].join('\n'),
        ids,
        0o600,
      );

    // Pick a free port and start; another process may grab the port between
    // our probe and postgres' bind, so retry on "Address already in use".
    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      config.host = `${ENDPOINT}:${port}`;
      await writeConfig();
      await writeServerConfig(port);
      try {
        await startServer(pgdata, dir, options.diagnostics);
        break;
      } catch (err) {
        if (attempt >= 10 || !/Address already in use/.test((err as Error).message)) throw err;
      }
    }
    running = true;

    const db: TestDb = {
      endpoint: ENDPOINT,
      port,
      region: REGION,
      caFile,
      caPem: tls.caPem,
      otherCaFile,
      socketDir: dir,
      key,
      jwtKey,
      dir,
      async useCertificate(kind: 'names' | 'cloudsql-cn'): Promise<void> {
        servedCert = kind === 'names' ? certFile : cnCertFile;
        await writeServerConfig(port);
        await stopServer(pgdata, 'fast');
        running = false;
        await startServer(pgdata, dir);
        running = true;
      },
      async admin(sql: string, dbName = 'postgres'): Promise<string> {
        const { stdout } = await run(
          join(PG_BIN, 'psql'),
          ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', dir, '-p', String(port), '-U', 'postgres', '-d', dbName, '-f', '-'],
          { asPostgres: true, input: sql },
        );
        return stdout.replace(/\n+$/, '');
      },
      async trustKey(k: AwsKey): Promise<void> {
        config.keys[k.accessKeyId] =
          k.sessionToken === undefined ? { secret: k.secretAccessKey } : { secret: k.secretAccessKey, sessionToken: k.sessionToken };
        await writeConfig();
      },
      async rejectNext(n: number): Promise<void> {
        if (!Number.isInteger(n) || n < 0) throw new Error(`rejectNext: bad count ${n}`);
        await writeOwned(join(checkerDir, 'reject-next'), `${n}\n`, ids, 0o600);
      },
      async checkerLog(): Promise<CheckerEntry[]> {
        let text: string;
        try {
          text = await readFile(join(checkerDir, 'checker.log'), 'utf8');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
          throw err;
        }
        return text
          .split('\n')
          .filter((line) => line !== '')
          .map((line) => JSON.parse(line) as CheckerEntry);
      },
      async stop(): Promise<void> {
        if (!running) return;
        await stopServer(pgdata, 'fast');
        running = false;
      },
      async start(): Promise<void> {
        if (destroyed) throw new Error('TestDb.start(): database was destroyed');
        if (running) return;
        await startServer(pgdata, dir);
        running = true;
      },
      destroy,
      [Symbol.asyncDispose]: destroy,
    };
    return db;
  } catch (err) {
    await destroy().catch(() => undefined);
    throw err;
  }
}

/**
 * initdb is the slow part of creating a cluster (~1 s even with --no-sync),
 * and so is creating the fixture roles and database. Do both once per
 * process into a template data dir; each test database is a copy of it.
 */
async function makeTemplate(ids: PostgresIds): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pg-iam-testdb-template-'));
  templateDir = dir;
  ensureExitHandler();
  await chmod(dir, 0o755);
  await chown(dir, ids.uid, ids.gid);
  const pgdata = join(dir, 'pgdata');
  await run(
    join(PG_BIN, 'initdb'),
    ['-D', pgdata, '-U', 'postgres', '--auth=trust', '--no-sync', '--no-instructions', '--encoding=UTF8', '--locale=C'],
    { asPostgres: true },
  );
  // Socket-only while building the template: nothing can reach it over TCP.
  await run(
    join(PG_BIN, 'pg_ctl'),
    [
      'start',
      '-w',
      '-t',
      '60',
      '-s',
      '-D',
      pgdata,
      '-l',
      join(dir, 'postgres.log'),
      '-o',
      `-c listen_addresses='' -c unix_socket_directories='${dir}' -c fsync=off`,
    ],
    { asPostgres: true },
  );
  try {
    await run(join(PG_BIN, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', dir, '-U', 'postgres', '-d', 'postgres', '-f', '-'], {
      asPostgres: true,
      input: SETUP_SQL,
    });
  } finally {
    await stopServer(pgdata, 'fast');
  }
  return pgdata;
}

async function startServer(pgdata: string, dir: string, cores = false): Promise<void> {
  const logFile = join(dir, 'postgres.log');
  const logStart = await stat(logFile).then(
    (s) => s.size,
    () => 0,
  );
  try {
    await run(join(PG_BIN, 'pg_ctl'), ['start', '-w', '-t', '60', '-s', ...(cores ? ['-c'] : []), '-D', pgdata, '-l', logFile], {
      asPostgres: true,
    });
  } catch (err) {
    // pg_ctl only says "could not start server"; the reason is in the log.
    const log = await readFile(logFile).then(
      (b) => b.subarray(logStart).toString('utf8'),
      () => '',
    );
    throw new Error(`${(err as Error).message}\n--- postgres.log ---\n${log}`);
  }
}

async function stopServer(pgdata: string, mode: 'fast' | 'immediate'): Promise<void> {
  await run(join(PG_BIN, 'pg_ctl'), ['stop', '-w', '-t', '60', '-s', '-D', pgdata, '-m', mode], { asPostgres: true });
}

/** Stops the server whatever it takes: removing its files under a live postmaster would orphan it. */
async function forceStop(pgdata: string): Promise<void> {
  try {
    await stopServer(pgdata, 'fast');
    return;
  } catch {
    // fall through
  }
  try {
    await stopServer(pgdata, 'immediate');
    return;
  } catch {
    // fall through
  }
  const pid = Number.parseInt((await readFile(join(pgdata, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0] ?? '', 10);
  if (pid > 0) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

interface RunOptions {
  asPostgres?: boolean;
  input?: string;
}

function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
  const [file, argv] = opts.asPostgres ? [RUNUSER, ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  return new Promise((resolve, reject) => {
    const child = execFile(file, argv, { env: PG_ENV, cwd: '/', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed (${err.code ?? err.signal}): ${stderr || err.message}`));
      else resolve({ stdout, stderr });
    });
    child.stdin?.end(opts.input ?? '');
  });
}

/** Writes a file atomically (temp + rename) owned by postgres. */
async function writeOwned(path: string, content: string, ids: PostgresIds, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, content, { mode });
  await chmod(tmp, mode);
  await chown(tmp, ids.uid, ids.gid);
  await rename(tmp, path);
}

function postgresUser(): PostgresIds {
  if (postgresIds) return postgresIds;
  const res = spawnSync('getent', ['passwd', 'postgres'], { encoding: 'utf8' });
  const fields = res.status === 0 ? res.stdout.trim().split(':') : [];
  if (fields.length < 4) throw new Error('startTestDb(): no `postgres` OS user (is the postgresql package installed?)');
  postgresIds = { uid: Number(fields[2]), gid: Number(fields[3]) };
  return postgresIds;
}

function checkerSource(): string {
  const path = fileURLToPath(new URL('./token-checker.js', import.meta.url));
  if (!existsSync(path)) throw new Error(`startTestDb(): compiled token checker not found at ${path} (run tsc first)`);
  return path;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      server.close(() => (addr !== null && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function randomId(length: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  return Array.from(randomBytes(length), (b) => alphabet[b % 32]).join('');
}

interface Certificates {
  caPem: string;
  otherCaPem: string;
  certPem: string;
  /** The same key, CN = my-project:myinstance and no names: a Cloud SQL instance on a per-instance CA. */
  cnCertPem: string;
  keyPem: string;
}

const EC: EcKeyGenParams & EcdsaParams = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

async function makeCertificates(): Promise<Certificates> {
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const notBefore = new Date(Date.now() - 3600_000); // tolerate small clock differences
  const notAfter = new Date(Date.now() + 400 * 24 * 3600_000); // as long-lived as RDS server certificates

  const makeCa = async (name: string): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair }> => {
    const keys = (await webcrypto.subtle.generateKey(EC, false, ['sign', 'verify'])) as CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomBytes(8).toString('hex'),
      name,
      notBefore,
      notAfter,
      keys,
      signingAlgorithm: EC,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return { cert, keys };
  };

  const ca = await makeCa('CN=pg-iam-proxy test RDS CA, O=pg-iam-proxy tests');
  const other = await makeCa('CN=pg-iam-proxy unrelated test CA, O=pg-iam-proxy tests');

  const leafKeys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString('hex'),
    subject: `CN=${ENDPOINT}`,
    issuer: ca.cert.subject,
    notBefore,
    notAfter,
    publicKey: leafKeys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      // DNS names only (no IP SAN): clients must verify the endpoint name. The same server stands in for
      // an RDS instance, an Azure server and a CAS-based Cloud SQL instance.
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: ENDPOINT },
        { type: 'dns', value: AZURE_ENDPOINT },
        { type: 'dns', value: CLOUD_SQL_DNS },
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
      await x509.SubjectKeyIdentifierExtension.create(leafKeys.publicKey),
    ],
  });
  const cnLeaf = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString('hex'),
    // Cloud SQL's legacy server certificates: CN = PROJECT:INSTANCE, no subjectAltName.
    subject: `CN=${CLOUD_SQL_NAME.split(':')[0]}:${CLOUD_SQL_NAME.split(':')[2]}`,
    issuer: ca.cert.subject,
    notBefore,
    notAfter,
    publicKey: leafKeys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
      await x509.SubjectKeyIdentifierExtension.create(leafKeys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey);

  return {
    caPem: `${ca.cert.toString('pem')}\n`,
    otherCaPem: `${other.cert.toString('pem')}\n`,
    certPem: `${leaf.toString('pem')}\n`,
    cnCertPem: `${cnLeaf.toString('pem')}\n`,
    keyPem: `${x509.PemConverter.encode(pkcs8, 'PRIVATE KEY')}\n`,
  };
}

let exitHandlerInstalled = false;

/**
 * Safety net for tests that forget destroy() or die on an exception: on
 * process exit, stop leftover servers (they would otherwise outlive the test
 * process) and remove their files and the template. Exit handlers must be
 * synchronous. (Signals that kill the process bypass this.)
 */
function ensureExitHandler(): void {
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  process.on('exit', () => {
    for (const { dir, pgdata, pamFile } of live) {
      if (existsSync(join(pgdata, 'postmaster.pid'))) {
        spawnSync(RUNUSER, ['-u', 'postgres', '--', join(PG_BIN, 'pg_ctl'), 'stop', '-w', '-s', '-D', pgdata, '-m', 'immediate'], {
          env: PG_ENV,
          stdio: 'ignore',
        });
      }
      rmSync(dir, { recursive: true, force: true });
      rmSync(pamFile, { force: true });
    }
    live.clear();
    if (templateDir !== undefined) rmSync(templateDir, { recursive: true, force: true });
  });
}
