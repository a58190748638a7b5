// The engine's configuration: plain frozen data, built and validated from argv, the environment and the
// file by the commands (commands/settings.ts), so the engine never sees yargs.
import { isAbsolute, join } from 'node:path';
import type { SettingsContext } from './cloud.js';
import type { CloudName } from './clouds/names.js';
import { cloudOf, cloudOfEndpoint, CLOUD_TABLE } from './clouds/table.js';
import type { CloudSqlInstance, IpType } from './gcp/instance.js';
import { formatHostPort, parseHostPort, type HostPort } from './host-port.js';
import type { IdentitySpec } from './aws/identity.js';
import { choiceList, DEFAULT_LISTEN, defaultFor, isChoice, NO_LISTEN, option, type NumberRow, type Settings } from './options.js';
import type { PoolSettings } from './pool/pool.js';

export interface InstanceConfig {
  /** Whose database it is: from the endpoint's form, or --cloud. */
  readonly cloud: CloudName;
  /**
   * The endpoint: what tokens are made for and what the certificate must name (RDS, Azure); for Cloud SQL
   * the connection name PROJECT:REGION:INSTANCE as the host (see `cloudSql`).
   */
  readonly endpoint: HostPort;
  /**
   * Cloud SQL: the instance, the SQL Admin API that describes it, and which of its addresses to dial (the
   * first kind it has, in this order).
   */
  readonly cloudSql?: { readonly instance: CloudSqlInstance; readonly api: string; readonly ipTypes: readonly IpType[] } | undefined;
  /** Where the TCP connection goes (a tunnel, a pinned address); the endpoint by default. */
  readonly connectTo: HostPort;
  /** The TCP listener; none for `run`, which listens only on a private unix socket. */
  readonly listen: HostPort | undefined;
  /** Also (or only) listen on DIR/.s.PGSQL.PORT, the way libpq looks for a server. */
  readonly unixSocket: UnixSocket | undefined;
  /** AWS: the signing region; Cloud SQL: the instance's region; Azure: empty. */
  readonly region: string;
  readonly caFile: string | undefined;
  readonly dbUser: string | undefined;
  /** Who signs the tokens: the default chain, a profile, a role assumed from either. */
  readonly identity: IdentitySpec;
  /** DB users that sign with an identity of their own (`users:`); the others sign with `identity`. */
  readonly users?: ReadonlyMap<string, IdentitySpec> | undefined;
  /** TLS for clients: a certificate made at start (auto), the user's (files), or none (off: 'N'). */
  readonly clientTls: ClientTlsSetting;
  /** Clients must prove this password (SCRAM-SHA-256) first. */
  readonly clientPasswordFile: string | undefined;
  /** The DB users and databases this listener signs for; undefined: any. */
  readonly allowUsers: readonly string[] | undefined;
  readonly allowDatabases: readonly string[] | undefined;
  /** Pooling (--pool-mode session|transaction); undefined: off, the 1:1 splice. */
  readonly pool?: PoolSettings | undefined;
}

export type ClientTlsSetting =
  | { readonly mode: 'auto' }
  | { readonly mode: 'off' }
  | { readonly mode: 'files'; readonly cert: string; readonly key: string };

export interface UnixSocket {
  readonly dir: string;
  /** The port in the socket's name; 0: the TCP listener's port. */
  readonly port: number;
  /** File mode of the socket: who may connect. Owner-only by default. */
  readonly mode: number;
}

export interface ProxyConfig {
  readonly instances: readonly InstanceConfig[];
  readonly startupTimeoutMs: number;
  readonly connectTimeoutMs: number;
  /** Per instance; surplus clients get FATAL 53300. */
  readonly maxConnections: number | undefined;
  readonly shutdownGraceMs: number;
}

/**
 * An instance as the user described it, before defaults and validation: the listener, identity and client
 * rows of the option table (options.ts), by their config-file keys.
 */
export type InstanceInput = Omit<Settings<'listener' | 'identity' | 'client'>, 'endpoint' | 'listen'> & {
  endpoint: string;
  /** An identity per DB user (config file `users:`). */
  users?: Readonly<Record<string, Settings<'identity'>>> | undefined;
  /** null: the command listens nowhere (token, doctor) or only on its own socket (run); 'none': no TCP listener. */
  listen?: string | null | undefined;
};

/**
 * Check one numeric setting, from a flag, PG_IAM_PROXY_* or the file (`where` names it), against its row's
 * range; returns the number. Text that is not a plain number ("30s") is refused rather than read as NaN.
 */
export function checkNumber(row: NumberRow, value: unknown, where: string): number {
  const {
    kind,
    range: { min, exclusive, max },
  } = row;
  const n =
    typeof value === 'number' ? value : typeof value === 'string' && /^\s*[+-]?(\d+\.?\d*|\.\d+)\s*$/.test(value) ? Number(value) : NaN;
  const whole = kind === 'count';
  if (!Number.isFinite(n) || (exclusive ? n <= min : n < min) || n > max || (whole && !Number.isInteger(n))) {
    const expected = whole
      ? `a whole number from ${min} to ${max}`
      : exclusive
        ? `a number of seconds greater than ${min} and at most ${max}`
        : `a number of seconds from ${min} to ${max}`;
    throw new ConfigError(`${where}: ${typeof value === 'string' ? JSON.stringify(value) : String(value)} is not ${expected}`);
  }
  return n;
}

/** A bad configuration: the CLI prints the message and exits 2. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/**
 * Validate one instance and fill its defaults. `envRegion` is AWS_REGION (or AWS_DEFAULT_REGION), the
 * last resort for the signing region (docs/protocol.md F1). Returns warnings worth logging at start.
 */
export function resolveInstance(input: InstanceInput, envRegion?: string): { instance: InstanceConfig; warnings: string[] } {
  const name = resolveCloud(input);
  const cloud = cloudOf(name);
  // Another cloud's own settings (an AWS profile, Cloud SQL's --ip-type) say the instance is not what it seems.
  for (const other of Object.values(CLOUD_TABLE)) {
    if (other === cloud) continue;
    const refused = other.settings.refuseOn(input, { title: cloud.title, credentialsFrom: cloud.settings.credentialsFrom });
    if (refused !== undefined) throw new ConfigError(refused);
  }
  const { listen, unixSocket } = resolveListeners(input);
  const warnings: string[] = [];
  const context: SettingsContext = {
    envRegion,
    fail: (message) => new ConfigError(message),
    hostPort: (text, what) => asConfigError(() => parseHostPort(text, what)),
    isLoopback,
    identity: () => resolveIdentity(input),
  };
  const { endpoint, connectTo, region, identity, cloudSql } = cloud.settings.resolve(input, context, warnings);
  return finishInstance(
    input,
    { cloud: name, endpoint, connectTo, listen, unixSocket, region, identity, ...(cloudSql ? { cloudSql } : {}) },
    warnings,
  );
}

/** The TCP listener and the unix socket. */
function resolveListeners(input: InstanceInput): Pick<InstanceConfig, 'listen' | 'unixSocket'> {
  const listen =
    input.listen === null || input.listen === NO_LISTEN
      ? undefined
      : asConfigError(() => parseHostPort(input.listen ?? DEFAULT_LISTEN, '--listen'));
  const unixSocket =
    input.unixSocket === undefined ? undefined : resolveUnixSocket(input.unixSocket, input.unixSocketMode, listen?.port ?? 5432);
  if (input.listen === NO_LISTEN && !unixSocket) {
    throw new ConfigError(`--listen ${NO_LISTEN} leaves no way in: give --unix-socket DIR too (or a TCP address to --listen)`);
  }
  return { listen, unixSocket };
}

/** The instance's cloud: --cloud (checked), else the endpoint's form, else AWS as always. */
export function resolveCloud(input: Pick<InstanceInput, 'cloud' | 'endpoint'>): CloudName {
  const given = input.cloud;
  if (given !== undefined) {
    if (!isChoice('cloud', given)) throw new ConfigError(`--cloud: "${given}" is not ${choiceList(option('cloud').choices)}`);
    return given;
  }
  return cloudOfEndpoint(input.endpoint) ?? 'aws';
}

/** What every cloud's instance shares once its endpoint, dial address and identity are known. */
function finishInstance(
  input: InstanceInput,
  own: Pick<InstanceConfig, 'cloud' | 'endpoint' | 'connectTo' | 'listen' | 'unixSocket' | 'region' | 'identity' | 'cloudSql'>,
  warnings: string[],
): { instance: InstanceConfig; warnings: string[] } {
  const { listen } = own;
  if (input.dbUser !== undefined && (input.dbUser === '' || Buffer.byteLength(input.dbUser) > 63)) {
    throw new ConfigError('--db-user: a PostgreSQL user name of 1 to 63 bytes');
  }
  const users = resolveUsers(input.users);
  const clientTls = resolveClientTls(input);
  const allowUsers = names(input.allowUsers, '--allow-user');
  const allowDatabases = names(input.allowDatabases, '--allow-database');
  const pool = resolvePool(input);
  if (listen && !isLoopback(listen.host) && !input.clientPasswordFile && !input.allowUnauthenticatedNetworkClients) {
    throw new ConfigError(
      `--listen ${formatHostPort(listen)} is not a loopback address: anyone who can reach it would log in to the database as the IAM user, with no password. ` +
        'Set --client-password-file (clients must then prove the password), or, if something else decides who can connect (a network policy, a firewall), say so with --allow-unauthenticated-network-clients.',
    );
  }
  if (listen && !isLoopback(listen.host) && input.clientPasswordFile && clientTls.mode === 'auto') {
    warnings.push(
      `--listen ${formatHostPort(listen)} takes network clients with a certificate made at start, which no client can verify: ` +
        'a man in the middle could relay their password exchange. Give --client-tls-cert and --client-tls-key with a certificate your clients verify (sslmode=verify-full).',
    );
  }
  return {
    instance: Object.freeze({
      ...own,
      caFile: input.caFile,
      dbUser: input.dbUser,
      clientTls,
      clientPasswordFile: input.clientPasswordFile,
      allowUsers,
      allowDatabases,
      ...(pool ? { pool } : {}),
      ...(users ? { users } : {}),
    }) as InstanceConfig,
    warnings,
  };
}

/** Servers per instance by default, as a multiple of --pool-size. */
const MAX_SERVERS_PER_POOL_SIZE = 2;

/** Seconds, already checked (checkNumber, from the flag or the file), as the engine's milliseconds. */
export const ms = (seconds: number) => Math.round(seconds * 1000);

/** The pooling settings, or undefined with --pool-mode off (the 1:1 splice). */
function resolvePool(input: InstanceInput): PoolSettings | undefined {
  const mode = input.poolMode ?? defaultFor('pool-mode')!;
  if (!isChoice('pool-mode', mode)) throw new ConfigError(`--pool-mode: "${mode}" is not ${choiceList(option('pool-mode').choices)}`);
  if (mode === 'off') return undefined;
  const msOr = (value: number | undefined, flag: 'pool-wait-timeout' | 'server-idle-timeout' | 'server-lifetime') =>
    ms(value ?? defaultFor(flag)!);
  const resetQuery = input.serverResetQuery ?? defaultFor('server-reset-query')!;
  if (resetQuery.trim() === '')
    throw new ConfigError('--server-reset-query: a query is needed (DISCARD ALL brings a server back to how its clients started it)');
  const size = input.poolSize ?? defaultFor('pool-size')!;
  return Object.freeze({
    mode,
    size,
    // Bounded by default: twice a pool's size over all the instance's pools (pools are per DB user and
    // database, so one user and database never reaches it).
    maxServers: input.maxServerConnections ?? size * MAX_SERVERS_PER_POOL_SIZE,
    waitTimeoutMs: msOr(input.poolWaitTimeout, 'pool-wait-timeout'),
    idleTimeoutMs: msOr(input.serverIdleTimeout, 'server-idle-timeout'),
    lifetimeMs: msOr(input.serverLifetime, 'server-lifetime'),
    resetQuery,
    maxPreparedStatements: input.maxPreparedStatements ?? defaultFor('max-prepared-statements')!,
    idleTransactionTimeoutMs: input.idleTransactionTimeout === undefined ? undefined : ms(input.idleTransactionTimeout),
  });
}

/** Loopback: only this machine's processes can connect. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(host);
}

function resolveClientTls(input: InstanceInput): ClientTlsSetting {
  const mode = input.clientTls ?? defaultFor('client-tls') ?? '';
  if (!isChoice('client-tls', mode)) throw new ConfigError(`--client-tls: "${mode}" is not ${choiceList(option('client-tls').choices)}`);
  const { clientTlsCert: cert, clientTlsKey: key } = input;
  if ((cert === undefined) !== (key === undefined)) throw new ConfigError('--client-tls-cert and --client-tls-key go together');
  if (cert !== undefined && key !== undefined) {
    if (mode === 'off') throw new ConfigError('--client-tls-cert with --client-tls off: drop one of them');
    return Object.freeze({ mode: 'files', cert, key });
  }
  return Object.freeze({ mode });
}

function names(list: readonly string[] | undefined, flag: string): readonly string[] | undefined {
  if (list === undefined || list.length === 0) return undefined;
  for (const name of list) {
    if (name === '' || Buffer.byteLength(name) > 63) throw new ConfigError(`${flag}: "${name}" is not a PostgreSQL name of 1 to 63 bytes`);
  }
  return Object.freeze([...list]);
}

function resolveUnixSocket(dir: string, modeInput: string | number | undefined, port: number): UnixSocket {
  if (!isAbsolute(dir)) throw new ConfigError(`--unix-socket: "${dir}" is not an absolute directory path`);
  const text = modeInput ?? defaultFor('unix-socket-mode') ?? '';
  const mode = typeof text === 'number' ? text : /^0?[0-7]{3}$/.test(text) ? parseInt(text, 8) : NaN;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777 || (mode & 0o200) === 0) {
    throw new ConfigError(`--unix-socket-mode: "${modeInput}" is not a file mode the owner can connect with (e.g. 0600, 0660)`);
  }
  // 107 bytes: sun_path's size on Linux, less the terminating NUL.
  if (Buffer.byteLength(join(dir, `.s.PGSQL.${port || 65535}`)) > 107)
    throw new ConfigError(`--unix-socket: "${dir}" is too long for a socket path`);
  return Object.freeze({ dir, port, mode });
}

/** `users:`: each entry an identity of its own, checked as the flags are (the errors name the entry). */
function resolveUsers(input: InstanceInput['users']): ReadonlyMap<string, IdentitySpec> | undefined {
  if (!input || Object.keys(input).length === 0) return undefined;
  const users = new Map<string, IdentitySpec>();
  for (const [user, keys] of Object.entries(input)) {
    try {
      users.set(user, resolveIdentity({ ...keys, endpoint: '' }));
    } catch (err) {
      throw err instanceof ConfigError ? new ConfigError(`users.${user}: ${err.message}`) : err;
    }
  }
  return users;
}

/** The identity settings, checked against what STS and IAM accept, so a typo fails at start. */
export function resolveIdentity(input: InstanceInput): IdentitySpec {
  const { profile, roleArn, roleSessionName, externalId, mfaSerial } = input;
  if (profile !== undefined && !/^[\w.+@-]{1,128}$/.test(profile)) throw new ConfigError(`--profile: "${profile}" is not a profile name`);
  if (roleArn === undefined) {
    for (const [name, value] of [
      ['role-session-name', roleSessionName],
      ['external-id', externalId],
      ['mfa-serial', mfaSerial],
    ] as const) {
      if (value !== undefined)
        throw new ConfigError(
          `--${name} is a setting of --role-arn, which is not given (a profile sets role_arn and its settings in ~/.aws/config)`,
        );
    }
  } else if (!/^arn:aws[\w-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/.test(roleArn)) {
    throw new ConfigError(`--role-arn: "${roleArn}" is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)`);
  }
  if (roleSessionName !== undefined && !/^[\w+=,.@-]{2,64}$/.test(roleSessionName)) {
    throw new ConfigError('--role-session-name: 2 to 64 characters of letters, digits and +=,.@_-');
  }
  if (externalId !== undefined && !/^[\w+=,.@:/-]{2,1224}$/.test(externalId)) {
    throw new ConfigError('--external-id: 2 to 1224 characters of letters, digits and +=,.@:/_-');
  }
  if (mfaSerial !== undefined && !/^(arn:aws[\w-]*:iam::\d{12}:mfa\/[\w+=,.@/-]+|[\w+=/:,.@-]{9,256})$/.test(mfaSerial)) {
    throw new ConfigError(`--mfa-serial: "${mfaSerial}" is not an MFA device ARN (arn:aws:iam::123456789012:mfa/NAME) or serial number`);
  }
  const spec = { profile, roleArn, roleSessionName, externalId, mfaSerial };
  return Object.freeze(Object.fromEntries(Object.entries(spec).filter(([, v]) => v !== undefined)) as IdentitySpec);
}

/** `parse`, its error made a ConfigError (exit 2) with the same message. */
export function asConfigError<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
}
