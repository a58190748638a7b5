// The only reader of argv and the environment: turns them into a frozen ProxyConfig and runs the engine.
import type { Logger } from 'pino';
import yargs, { type Argv } from 'yargs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { regionFromEndpoint } from './aws/endpoint.js';
import { formatHostPort, parseHostPort, type HostPort } from './host-port.js';
import { Identities, NoCredentialsError } from './aws/identity.js';
import { announceAll, engineDeps } from './commands/wiring.js';
import { terminalMfa } from './aws/mfa.js';
import { checkNumber, ConfigError, DEFAULT_LISTEN, NO_LISTEN, resolveInstance, type InstanceInput, type NumberSetting, type ProxyConfig } from './config.js';
import { createLogger, redactSecrets, type LogFormat } from './log.js';
import { Engine } from './proxy/engine.js';
import { loadConfigFile } from './config-file.js';
import type { Metrics } from './ops/metrics.js';

/** Process exit codes a supervisor can act on. */
export const ExitCode = {
  Ok: 0,
  Failure: 1, // could not start (a port in use, an unreadable CA file)
  Usage: 2, // bad configuration
  NoCredentials: 3, // --require-credentials and none at start
  Interrupted: 130, // second SIGINT: 128 + 2
  Terminated: 143, // second SIGTERM: 128 + 15
} as const;

const ENV_PREFIX = 'PG_IAM_PROXY';

/** PG_IAM_PROXY_SHUTDOWN_GRACE for shutdown-grace. */
const envName = (flag: string) => `${ENV_PREFIX}_${flag.toUpperCase().replaceAll('-', '_')}`;

/**
 * A numeric option, checked as given (a flag or its PG_IAM_PROXY_* variable): "30s" or a bound a timer
 * cannot hold is a usage error naming the option, not NaN or a timer that fires at once.
 */
const numberOption = (name: NumberSetting, describe: string) => ({
  describe,
  requiresArg: true,
  coerce: (value: unknown) => checkNumber(name, value, `--${name} (${envName(name)})`),
});

/** What every command needs to reach the database and sign: the endpoint, the dial address, the identity. */
function targetOptions<T>(y: Argv<T>) {
  return y
    .positional('endpoint', { type: 'string', describe: 'RDS endpoint name[:port] that tokens are signed for and TLS verifies' })
    .option('connect-to', { type: 'string', describe: 'dial HOST:PORT instead of the endpoint (a tunnel); TLS and tokens stay for the endpoint' })
    .option('ca-file', { type: 'string', describe: 'PEM bundle to trust for the server certificate instead of the bundled RDS CAs' })
    .option('region', { type: 'string', describe: 'signing region (default: from the endpoint name, else AWS_REGION)' })
    .option('profile', { type: 'string', describe: 'AWS profile to sign with (default: the SDK default chain, AWS_PROFILE)' })
    .option('role-arn', { type: 'string', describe: 'IAM role to assume from the base credentials, and sign as' })
    .option('role-session-name', { type: 'string', describe: 'session name for --role-arn (default: pg-iam-proxy@HOSTNAME)' })
    .option('external-id', { type: 'string', describe: "external ID the role's trust policy demands" })
    .option('mfa-serial', { type: 'string', describe: "MFA device the role's trust policy demands; the code is asked on the terminal" })
    .option('connect-timeout', numberOption('connect-timeout', 'seconds to get credentials, connect, handshake and log in upstream [default: 10]'));
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** The proxy's own options, shared by serve and run. */
function proxyOptions<T>(y: Argv<T>, logLevel: string) {
  return targetOptions(y)
    .option('db-user', { type: 'string', describe: 'log in as this DB user whatever the client sends' })
    .option('client-tls', { type: 'string', choices: ['auto', 'off'], describe: "answer clients' SSLRequest with a certificate made at start (auto), or decline (off) [default: auto]" })
    .option('client-tls-cert', { type: 'string', describe: 'serve this PEM certificate to clients (with --client-tls-key), e.g. for sslmode=verify-full' })
    .option('client-tls-key', { type: 'string', describe: "the PEM private key of --client-tls-cert" })
    .option('client-password-file', { type: 'string', describe: 'clients must prove this password (SCRAM-SHA-256) before anything goes upstream' })
    .option('allow-user', { type: 'string', array: true, describe: 'sign only for these DB users (repeatable); others get 28000' })
    .option('allow-database', { type: 'string', array: true, describe: 'connect only to these databases (repeatable)' })
    .option('allow-unauthenticated-network-clients', { type: 'boolean', describe: 'listen beyond loopback without --client-password-file: anyone who reaches the port logs in as the IAM user' })
    .option('max-connections', numberOption('max-connections', 'clients beyond this get FATAL 53300 (default: unlimited)'))
    .option('startup-timeout', numberOption('startup-timeout', 'seconds a client has to finish its startup [default: 15]'))
    .option('log-level', { type: 'string', choices: LOG_LEVELS, describe: `[default: ${logLevel}]` })
    .option('log-format', { type: 'string', choices: ['json', 'pretty'], describe: 'default: pretty on a terminal, else json' });
}

function serveOptions<T>(y: Argv<T>) {
  return proxyOptions(y, 'info')
    .option('config', { type: 'string', describe: 'YAML file: several instances and global settings (see config.example.yaml)' })
    .option('listen', { type: 'string', describe: `TCP listener ADDR:PORT, or ${NO_LISTEN} to serve on --unix-socket alone [default: ${DEFAULT_LISTEN}]` })
    .option('unix-socket', { type: 'string', describe: 'also listen on DIR/.s.PGSQL.<port>, for psql -h DIR' })
    .option('unix-socket-mode', { type: 'string', describe: 'file mode of the unix socket (who may connect) [default: 0600]' })
    .option('shutdown-grace', numberOption('shutdown-grace', 'on SIGTERM/SIGINT, seconds to wait for sessions to end [default: 30]'))
    .option('http', { type: 'string', describe: 'serve /healthz, /readyz and /metrics on ADDR:PORT' })
    .option('require-credentials', { type: 'boolean', describe: 'exit 3 when no AWS credentials can be had at start, instead of serving and reporting not ready' });
}

function runOptions<T>(y: Argv<T>) {
  return proxyOptions(y, 'warn')
    .option('user', { type: 'string', describe: 'the DB user: sets PGUSER for the command' })
    .option('keep-aws-env', { type: 'boolean', describe: 'pass AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN on to the command (by default it gets none: the proxy signs for it)' })
    .usage('$0 run ENDPOINT[:PORT] [--user U] [options] -- CMD [ARGS...]');
}

function tokenOptions<T>(y: Argv<T>) {
  return targetOptions(y).option('user', { type: 'string', demandOption: true, describe: 'the DB user the token is for' });
}

function doctorOptions<T>(y: Argv<T>) {
  return targetOptions(y)
    .option('user', { type: 'string', demandOption: true, describe: 'the DB user to log in as' })
    .option('database', { type: 'string', default: 'postgres', describe: 'the database for the test login' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON document with every check' });
}

type TargetArgs = Awaited<ReturnType<typeof targetOptions>['argv']>;
type ServeArgs = Awaited<ReturnType<typeof serveOptions>['argv']>;
type RunArgs = Awaited<ReturnType<typeof runOptions>['argv']> & { '--'?: Array<string | number> };
type TokenArgs = Awaited<ReturnType<typeof tokenOptions>['argv']>;
type DoctorArgs = Awaited<ReturnType<typeof doctorOptions>['argv']>;

/** Seconds, already checked (numberOption, the file's schema), as the engine's milliseconds. */
const ms = (seconds: number) => Math.round(seconds * 1000);

/** The instance as the command line and PG_IAM_PROXY_* describe it (yargs has merged the two). */
function instanceInput(args: TargetArgs & Partial<ServeArgs>): InstanceInput {
  return {
    endpoint: args.endpoint ?? '',
    listen: args.listen,
    unixSocket: args['unix-socket'],
    unixSocketMode: args['unix-socket-mode'],
    connectTo: args['connect-to'],
    region: args.region,
    caFile: args['ca-file'],
    dbUser: args['db-user'],
    profile: args.profile,
    roleArn: args['role-arn'],
    roleSessionName: args['role-session-name'],
    externalId: args['external-id'],
    mfaSerial: args['mfa-serial'],
    clientTls: args['client-tls'],
    clientTlsCert: args['client-tls-cert'],
    clientTlsKey: args['client-tls-key'],
    clientPasswordFile: args['client-password-file'],
    allowUsers: args['allow-user'],
    allowDatabases: args['allow-database'],
    allowUnauthenticatedNetworkClients: args['allow-unauthenticated-network-clients'],
  };
}

const envRegion = (env: NodeJS.ProcessEnv) => env.AWS_REGION ?? env.AWS_DEFAULT_REGION;

/** Settings that apply to one instance: with several instances in a file, they belong in the file. */
const INSTANCE_FLAGS = ['listen', 'unix-socket', 'unix-socket-mode', 'connect-to', 'ca-file', 'db-user'] as const;
const IDENTITY_KEYS = ['region', 'profile', 'roleArn', 'roleSessionName', 'externalId', 'mfaSerial'] as const;
const CLIENT_KEYS = ['clientTls', 'clientTlsCert', 'clientTlsKey', 'clientPasswordFile', 'allowUsers', 'allowDatabases', 'allowUnauthenticatedNetworkClients'] as const;

export interface ServeSettings {
  readonly config: ProxyConfig;
  readonly warnings: string[];
  readonly http: HostPort | undefined;
  readonly requireCredentials: boolean;
  readonly log: { readonly level: string; readonly format: LogFormat | undefined };
}

/**
 * Cross-field validation in one place (STYLE.md): argv, PG_IAM_PROXY_* (merged by yargs) and the config
 * file in, frozen config out. Precedence: flags > environment > file > defaults.
 */
export function serveConfig(args: TargetArgs & Partial<ServeArgs>, env: NodeJS.ProcessEnv, override: Partial<InstanceInput> = {}): ServeSettings {
  const file = args.config ? loadConfigFile(args.config) : undefined;
  const given = instanceInput(args);
  const inputs: Array<InstanceInput & { line?: number }> = [];
  if (file) {
    if (args.endpoint) throw new ConfigError(`give the endpoint either on the command line or in ${args.config}'s instances, not both`);
    const flagged = INSTANCE_FLAGS.filter((flag) => args[flag] !== undefined);
    if (flagged.length > 0 && file.instances.length > 1) {
      throw new ConfigError(`--${flagged.join(', --')}: ${args.config} has ${file.instances.length} instances; set this per instance in the file`);
    }
    for (const fromFile of file.instances) {
      const merged: InstanceInput & { line?: number } = { ...fromFile };
      // Identity and region: the flag, else the instance's own key, else the file's aws defaults.
      for (const key of IDENTITY_KEYS) merged[key] = given[key] ?? fromFile[key] ?? file.aws?.[key];
      // Client-side settings: the flag, else the instance's own, else the file's top level.
      for (const key of CLIENT_KEYS) (merged as unknown as Record<string, unknown>)[key] = given[key] ?? fromFile[key] ?? file[key];
      for (const [key, value] of Object.entries(given)) if (value !== undefined && value !== '' && key !== 'endpoint') (merged as unknown as Record<string, unknown>)[key] = value;
      inputs.push({ ...merged, ...override });
    }
  } else {
    if (!args.endpoint) throw new ConfigError('an ENDPOINT (the RDS endpoint name) or --config FILE is needed');
    inputs.push({ ...given, ...override });
  }
  const warnings: string[] = [];
  const instances = inputs.map((input, i) => {
    try {
      const resolved = resolveInstance(input, envRegion(env));
      warnings.push(...resolved.warnings);
      return resolved.instance;
    } catch (err) {
      if (!(err instanceof ConfigError) || !file) throw err;
      throw new ConfigError(`${args.config}:${input.line}: instances[${i}]: ${err.message}`);
    }
  });
  const seen = new Map<string, number>();
  instances.forEach((instance, i) => {
    for (const where of [instance.listen && formatHostPort(instance.listen), instance.unixSocket && `${instance.unixSocket.dir} port ${instance.unixSocket.port}`]) {
      if (!where || where.endsWith(':0')) continue;
      const other = seen.get(where);
      if (other !== undefined) throw new ConfigError(`instances[${other}] and instances[${i}] both listen on ${where}`);
      seen.set(where, i);
    }
  });
  const max = args['max-connections'] ?? file?.maxConnections;
  const config: ProxyConfig = Object.freeze({
    instances: Object.freeze(instances),
    startupTimeoutMs: ms(args['startup-timeout'] ?? file?.startupTimeout ?? 15),
    connectTimeoutMs: ms(args['connect-timeout'] ?? file?.connectTimeout ?? 10),
    maxConnections: max,
    shutdownGraceMs: ms(args['shutdown-grace'] ?? file?.shutdownGrace ?? 30),
  });
  const httpText = args.http ?? file?.http;
  const level = args['log-level'] ?? file?.log?.level ?? 'info';
  if (!LOG_LEVELS.includes(level)) throw new ConfigError(`log level: "${level}" is not one of ${LOG_LEVELS.join(', ')}`);
  const format = args['log-format'] ?? file?.log?.format;
  if (format !== undefined && format !== 'json' && format !== 'pretty') throw new ConfigError(`log format: "${format}" is not json or pretty`);
  return {
    config,
    warnings,
    http: httpText === undefined ? undefined : wrapConfig(() => parseHostPort(httpText, '--http', null)),
    requireCredentials: args['require-credentials'] ?? file?.requireCredentials ?? false,
    log: { level, format },
  };
}

function wrapConfig<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
}

function logOptions(log: { level: string; format: string | undefined }) {
  const format = (log.format as LogFormat | undefined) ?? (process.stderr.isTTY ? 'pretty' : 'json');
  return { level: log.level, format };
}

/** Run the proxy until a signal; resolves to the exit code. */
async function serve(args: ServeArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const settings = serveConfig(args, env);
  const { config } = settings;
  const log = createLogger(logOptions(settings.log));
  for (const warning of settings.warnings) log.warn(warning);
  routeProcessWarnings(log);
  // Metrics and the HTTP endpoint load only when asked for (--http): start-up stays short without them.
  const metrics: Metrics | undefined = settings.http ? new (await import('./ops/metrics.js')).Metrics() : undefined;
  const identities = new Identities({ log, mfa: terminalMfa(), onRefresh: metrics?.credentialsRefreshed });
  const proxy = new Engine(config, engineDeps({ identities, log, observe: metrics?.observe }));
  const ops = metrics ? new (await import('./ops/http.js')).OpsServer({ proxy, identities, metrics, log }) : undefined;
  const stop = async (code: number) => {
    identities.close();
    await ops?.close();
    await flush(log);
    return code;
  };
  try {
    await proxy.listen();
    if (ops && settings.http) await ops.listen(settings.http);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    log.fatal({ err }, e.code === 'EADDRINUSE' ? `cannot listen: address in use (${e.message})` : `cannot start: ${e.message}`);
    await proxy.close(0);
    return stop(ExitCode.Failure);
  }
  // Fetch credentials now, so the first client does not wait. Without them the proxy serves (clients are
  // told why, /readyz says not ready) unless --require-credentials asks for an exit a supervisor sees.
  const announced = announceAll(config, identities, log);
  if (settings.requireCredentials && (await announced).includes(false)) {
    log.fatal('no AWS credentials at start, and --require-credentials is set: exiting');
    await proxy.close(0);
    return stop(ExitCode.NoCredentials);
  }
  return stop(await untilSignal(proxy, log, () => ops?.drain()));
}

/** `token`: one token on stdout and nothing else there; errors on stderr. */
async function token(args: TokenArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const { instance, warnings } = resolveInstance({ ...instanceInput(args), listen: null }, envRegion(env));
  const log = createLogger({ level: 'warn', format: process.stderr.isTTY ? 'pretty' : 'json' });
  for (const warning of warnings) log.warn(warning);
  routeProcessWarnings(log);
  const identities = new Identities({ mfa: terminalMfa() });
  try {
    const { signToken } = await import('./commands/token.js');
    process.stdout.write(`${await signToken(instance, args.user, identities)}\n`);
    return ExitCode.Ok;
  } catch (err) {
    const tried = err instanceof NoCredentialsError && err.tried.length > 0 ? `\n  sources tried: ${err.describeTried()}` : '';
    process.stderr.write(`pg-iam-proxy: cannot sign a token: ${redactSecrets((err as Error).message)}${tried}\n`);
    return ExitCode.Failure;
  } finally {
    identities.close();
    await flush(log);
  }
}

/** `run`: the proxy on a private unix socket for the life of one command. */
async function run(args: RunArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const [command, ...commandArgs] = (args['--'] ?? []).map(String);
  if (!command) throw new ConfigError('run: no command given: pg-iam-proxy run ENDPOINT [options] -- CMD [ARGS...]');
  if (args.user !== undefined && (args.user === '' || Buffer.byteLength(args.user) > 63)) throw new ConfigError('--user: a PostgreSQL user name of 1 to 63 bytes');
  // Absolute (libpq reads a PGHOST starting with / as a socket directory) and without commas (a host list).
  const dir = resolve(await mkdtemp(join(tmpdir(), 'pg-iam-proxy-')));
  if (dir.includes(',')) {
    await rm(dir, { recursive: true, force: true });
    throw new ConfigError(`run: the temporary directory ${dir} contains a comma, which libpq would read as a host list: set TMPDIR`);
  }
  try {
    const { config, warnings, log: logSettings } = serveConfig({ ...args, 'log-level': args['log-level'] ?? 'warn' }, env, { listen: null, unixSocket: dir, unixSocketMode: '0600' });
    const log = createLogger(logOptions(logSettings));
    for (const warning of warnings) log.warn(warning);
    routeProcessWarnings(log);
    const identities = new Identities({ log, mfa: terminalMfa() });
    const { runWithProxy } = await import('./commands/run.js');
    const code = await runWithProxy(config, { command, args: commandArgs, user: args.user, env, log, identities, keepAwsEnv: args['keep-aws-env'] === true });
    identities.close();
    await flush(log);
    return code;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `doctor`: every check in order, printed for people or as JSON; 0 only when a real login succeeded. */
async function doctor(args: DoctorArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const { instance, warnings } = resolveInstance({ ...instanceInput(args), listen: null }, envRegion(env));
  const log = createLogger({ level: 'silent', format: 'json' });
  routeProcessWarnings(log);
  const identities = new Identities({ mfa: terminalMfa() });
  try {
    const { formatReport, runDoctor } = await import('./commands/doctor.js');
    const report = await runDoctor(instance, {
      user: args.user,
      database: args.database,
      connectTimeoutMs: ms(args['connect-timeout'] ?? 10),
      identities,
      configWarnings: warnings,
      regionSource: args.region ? 'flag' : regionFromEndpoint(instance.endpoint.host) ? 'endpoint' : 'env',
    });
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report, process.stdout.isTTY === true));
    return report.ok ? ExitCode.Ok : ExitCode.Failure;
  } finally {
    identities.close();
  }
}

/** Node's process warnings (the SDK's Node version notice among them) as log lines, not stray stderr text. */
function routeProcessWarnings(log: Logger): void {
  process.removeAllListeners('warning');
  // At info: they are notices for operators (the SDK's Node version notice), not faults of the proxy.
  process.on('warning', (warning) => log.info({ warning: { name: warning.name, message: warning.message } }, 'Node.js warning'));
}

/** First SIGINT/SIGTERM: drain and exit 0. A second: exit at once with 128 + signal. */
function untilSignal(proxy: Engine, log: Logger, onDrain: () => void): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        resolve(signal === 'SIGINT' ? ExitCode.Interrupted : ExitCode.Terminated);
        return;
      }
      stopping = true;
      onDrain();
      log.info({ signal, graceSeconds: proxy.config.shutdownGraceMs / 1000 }, 'shutting down: no new connections, waiting for sessions to end');
      proxy.close().then(() => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        log.info('stopped');
        resolve(ExitCode.Ok);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

const flush = (log: Logger) => new Promise<void>((resolve) => log.flush(() => resolve()));

/** Entry point: parse, run, resolve to the exit code. Never throws. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let code: number = ExitCode.Ok;
  try {
    // PG_IAM_PROXY_* set for one command (a sidecar's PG_IAM_PROXY_HTTP) must not break another
    // (`doctor` in the same container): each command takes the variables it knows; flags stay strict.
    const fromEnv = new Set(
      Object.keys(process.env)
        .filter((name) => name.startsWith(`${ENV_PREFIX}_`))
        .map((name) => name.slice(ENV_PREFIX.length + 1).toLowerCase().replaceAll('_', '-')),
    );
    const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    /** The command being run, as its builder left it (getOptions is yargs API its types lack). */
    let command: { getOptions(): { key: Record<string, unknown> } } | undefined;
    const building = <T>(y: T) => ((command = y as unknown as typeof command), y);
    await yargs(argv)
      .scriptName('pg-iam-proxy')
      .env(ENV_PREFIX)
      .middleware((args) => {
        const known = command?.getOptions().key ?? {};
        for (const key of Object.keys(args)) if (fromEnv.has(kebab(key)) && !(kebab(key) in known)) delete args[key];
      }, true)
      .command(
        ['serve [endpoint]', '$0 [endpoint]'],
        'run the proxy (the default command)',
        (y) => serveOptions(building(y)),
        async (args) => {
          code = await serve(args as ServeArgs, env);
        },
      )
      .command(
        'token <endpoint>',
        'print one IAM token on stdout, like `aws rds generate-db-auth-token`',
        (y) => tokenOptions(building(y)),
        async (args) => {
          code = await token(args as TokenArgs, env);
        },
      )
      .command(
        'run <endpoint>',
        'run CMD with the proxy on a private socket: PGHOST, PGPORT, PGUSER and PGSSLMODE=disable set; exit with its status',
        (y) => runOptions(building(y)).parserConfiguration({ 'populate--': true }),
        async (args) => {
          code = await run(args as RunArgs, env);
        },
      )
      .command(
        'doctor <endpoint>',
        'check every link from credentials to a real login; say what is wrong and the fix',
        (y) => doctorOptions(building(y)),
        async (args) => {
          code = await doctor(args as DoctorArgs, env);
        },
      )
      .strict()
      .help()
      .version()
      .wrap(Math.min(110, process.stdout.columns || 100))
      .fail((message, err) => {
        throw err ?? new ConfigError(message);
      })
      .parseAsync();
  } catch (err) {
    process.stderr.write(`pg-iam-proxy: ${(err as Error).message}\n`);
    return err instanceof ConfigError || !(err instanceof Error) || (err as Error).name === 'YError' ? ExitCode.Usage : ExitCode.Failure;
  }
  return code;
}
