// The only reader of argv and the environment: turns them into a frozen ProxyConfig and runs the command.
// The options come from one table (options.ts): each command's flags, their PG_IAM_PROXY_* variables and
// the config file's keys are its rows.
import type { Logger } from 'pino';
import yargs, { type Argv, type Options } from 'yargs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { regionFromEndpoint } from './aws/endpoint.js';
import { DEFAULT_PG_PORT, formatHostPort, parseHostPort, type HostPort } from './host-port.js';
import { parseCloudSqlName } from './gcp/instance.js';
import { Identities, NoCredentialsError } from './aws/identity.js';
import { terminalMfa } from './aws/mfa.js';
import { asConfigError, checkNumber, ConfigError, resolveCloud, resolveInstance, type InstanceInput, type ProxyConfig } from './config.js';
import { createLogger, finishLog, redactSecrets, type LogFormat } from './log.js';
import { loadConfigFile, type FileSettings } from './config-file.js';
import { version } from './version.js';
import {
  choiceList,
  COMMANDS,
  defaultFor,
  defaultOf,
  describeFor,
  envName,
  fileKey,
  isChoice,
  option,
  OPTIONS,
  rowsIn,
  rowsOf,
  type Args,
  type Command,
  type Flag,
  type OptionRow,
  type ValueOf,
} from './options.js';
import { ExitCode, serve } from './commands/serve.js';

export { ExitCode };

/** A row as yargs takes it, for one command. */
function yargsOption(row: OptionRow, command: Command): Options {
  const shown = defaultOf(row, command);
  const common: Options = {
    describe: describeFor(row, command),
    // Shown, not set: a default set in yargs would hide the config file's value, which ranks above it.
    ...(shown !== undefined && { defaultDescription: String(shown) }),
    ...(row.required?.includes(command) && { demandOption: true }),
  };
  switch (row.kind) {
    case 'seconds':
    case 'count':
      // Checked as given (a flag or its variable): "30s" or a bound a timer cannot hold is a usage error
      // naming the option, not NaN or a timer that fires at once.
      return { ...common, requiresArg: true, coerce: (value: unknown) => checkNumber(row, value, `--${row.flag} (${envName(row.flag)})`) };
    case 'boolean':
      return { ...common, type: 'boolean' };
    case 'strings':
      return { ...common, type: 'string', array: true };
    case 'choice':
      return { ...common, type: 'string', choices: [...row.choices] };
    default:
      return { ...common, type: 'string' };
  }
}

/**
 * The PG_IAM_PROXY_* variables of a command's options, by flag. Variables set for one command (a sidecar's
 * PG_IAM_PROXY_HTTP) must not break another (`doctor` in the same container): each command takes the
 * variables of its own options and no others; its flags stay strict.
 */
export function fromEnv(command: Command, env: NodeJS.ProcessEnv): Record<string, string> {
  const found: Record<string, string> = {};
  for (const row of rowsOf(command)) {
    const value = env[envName(row.flag)];
    if (value !== undefined) found[row.flag] = value;
  }
  return found;
}

/** A command's options, from its rows. The variables go in as a configuration object: below the flags, checked and coerced as they are. */
function commandOptions<T>(y: Argv<T>, command: Command, env: NodeJS.ProcessEnv): Argv<T> {
  for (const row of rowsOf(command)) {
    if (row.positional) y.positional(row.flag, { type: 'string', describe: describeFor(row, command) });
    else y.option(row.flag, yargsOption(row, command));
  }
  return y.config(fromEnv(command, env));
}

type RunArgs = Args<'run'> & { '--'?: Array<string | number> };

/** What the command line asks for: a command and its options, flags over PG_IAM_PROXY_*, as yargs checked them. */
export type Invocation =
  | { readonly command: 'serve'; readonly args: Args<'serve'> }
  | { readonly command: 'run'; readonly args: RunArgs }
  | { readonly command: 'token'; readonly args: Args<'token'> }
  | { readonly command: 'doctor'; readonly args: Args<'doctor'> };

/**
 * Parse argv with `env` as its PG_IAM_PROXY_* variables; undefined when help or the version was asked for
 * (printed, or handed to `output` when given). Throws a ConfigError for a usage error.
 */
export async function parseCommandLine(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  output?: (text: string) => void,
): Promise<Invocation | undefined> {
  let found: Invocation | undefined;
  // yargs has checked each value against the command's rows, so each args object has the shape Args<C>
  // gives. Copied: after the handler, yargs folds run's `--` into `_` on the object it handed over.
  const parser = yargs()
    .scriptName('pg-iam-proxy')
    .command(
      ['serve [endpoint]', '$0 [endpoint]'],
      'run the proxy (the default command)',
      (y) => commandOptions(y, 'serve', env),
      (args) => void (found = { command: 'serve', args: { ...args } as Args<'serve'> }),
    )
    .command(
      'token <endpoint>',
      'print one IAM token on stdout, like `aws rds generate-db-auth-token`',
      (y) => commandOptions(y, 'token', env),
      (args) => void (found = { command: 'token', args: { ...args } as Args<'token'> }),
    )
    .command(
      'run <endpoint>',
      'run CMD with the proxy on a private socket: PGHOST, PGPORT, PGUSER and PGSSLMODE=disable set; exit with its status',
      (y) =>
        commandOptions(y, 'run', env)
          .usage('$0 run ENDPOINT[:PORT] [--user U] [options] -- CMD [ARGS...]')
          .parserConfiguration({ 'populate--': true }),
      (args) => void (found = { command: 'run', args: { ...args } as RunArgs }),
    )
    .command(
      'doctor <endpoint>',
      'check every link from credentials to a real login; say what is wrong and the fix',
      (y) => commandOptions(y, 'doctor', env),
      (args) => void (found = { command: 'doctor', args: { ...args } as Args<'doctor'> }),
    )
    .strict()
    .help()
    .version(version())
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((message, err) => {
      // A usage error, from yargs' checks or a row's coerce (checkNumber), which yargs wraps.
      throw new ConfigError(err?.message ?? missingSaid(message, argv) ?? message);
    });
  if (output) await parser.parseAsync([...argv], {}, (_err, _args, text) => output(text));
  else await parser.parseAsync([...argv]);
  return found;
}

/**
 * yargs' "Missing required argument: user" as what the command needs it for and how to give it (the
 * option's row says what it is to the command).
 */
function missingSaid(message: string, argv: readonly string[]): string | undefined {
  const missing = /^Missing required arguments?: (.+)$/.exec(message);
  const command = argv.find((arg): arg is Command => (COMMANDS as readonly string[]).includes(arg));
  if (!missing || !command) return undefined;
  return missing[1]!
    .split(', ')
    .map((flag) => {
      const row = OPTIONS.find((r) => r.flag === flag);
      const what = row ? describeFor(row, command) : undefined;
      return `${command} needs --${flag}${what ? ` (${what})` : ''}: pg-iam-proxy ${command} ENDPOINT --${flag} ${flag.toUpperCase()}, or set ${envName(flag)}`;
    })
    .join('; ');
}

/** Seconds, already checked (checkNumber, from the flag or the file), as the engine's milliseconds. */
const ms = (seconds: number) => Math.round(seconds * 1000);

/** The instance as the command line and PG_IAM_PROXY_* describe it: each instance row's flag, under its file key. */
function instanceInput(args: Args<Command>): InstanceInput {
  const flags: Readonly<Record<string, unknown>> = args;
  const input = Object.fromEntries(rowsIn('listener', 'identity', 'client').map((row) => [fileKey(row), flags[row.flag]]));
  // The keys are InstanceInput's (both come from the same rows), each value checked for its row's kind by yargs.
  return { ...input, endpoint: args.endpoint ?? '' } as InstanceInput;
}

/**
 * One instance of the file with the command line over it. Listener settings: the flag, else the instance's
 * own (an empty flag, PG_IAM_PROXY_LISTEN=, leaves it to the file); identity: the flag, else the instance's
 * own, else the file's `aws:`; client settings: the flag, else the instance's own, else the file's top level.
 */
function overFile(given: InstanceInput, own: InstanceInput & { line: number }, file: FileSettings): InstanceInput & { line: number } {
  const flags: Readonly<Record<string, unknown>> = given;
  const instance: Readonly<Record<string, unknown>> = own;
  // `aws:` is the AWS instances' identity; another cloud's instance has none to inherit.
  const aws = resolveCloud({ cloud: given.cloud ?? own.cloud, endpoint: own.endpoint }) === 'aws' ? file.aws : undefined;
  const shared: Readonly<Record<string, Readonly<Record<string, unknown>>>> = { identity: aws ?? {}, client: file };
  const merged: Record<string, unknown> = { ...own };
  for (const row of rowsIn('listener', 'identity', 'client')) {
    if (row.positional) continue; // the endpoint is the file's: both is an error
    const key = fileKey(row);
    const flag = flags[key];
    if (row.scope === 'listener') merged[key] = flag === undefined || flag === '' ? instance[key] : flag;
    else merged[key] = flag ?? instance[key] ?? shared[row.scope]?.[key];
  }
  // Identities per DB user: the file's, then the instance's own over them, user by user.
  if (aws && (file.users || own.users)) merged.users = { ...file.users, ...own.users };
  else if (own.users) merged.users = own.users;
  // The keys are the instance's and its rows', the values checked for their kinds by yargs or the file's schema.
  return merged as InstanceInput & { line: number };
}

const envRegion = (env: NodeJS.ProcessEnv) => env.AWS_REGION ?? env.AWS_DEFAULT_REGION;

export interface ServeSettings {
  readonly config: ProxyConfig;
  readonly warnings: string[];
  readonly http: HostPort | undefined;
  readonly requireCredentials: boolean;
  readonly minSigtermDelayMs: number;
  readonly exitZeroOnSigterm: boolean;
  readonly log: { readonly level: string; readonly format: LogFormat | undefined };
}

/**
 * Cross-field validation in one place: argv, PG_IAM_PROXY_* (merged by yargs) and the config
 * file in, frozen config out. Precedence: flags > environment > file > defaults.
 */
export function serveConfig(
  args: Args<'serve' | 'run'>,
  env: NodeJS.ProcessEnv,
  override: Partial<InstanceInput> = {},
  command: 'serve' | 'run' = 'serve',
): ServeSettings {
  const file = args.config ? loadConfigFile(args.config) : undefined;
  const given = instanceInput(args);
  const flags: Readonly<Record<string, unknown>> = args;
  const inputs: Array<InstanceInput & { line?: number }> = [];
  if (file) {
    if (args.endpoint) throw new ConfigError(`give the endpoint either on the command line or in ${args.config}'s instances, not both`);
    // Settings of one listener: with several instances in a file, they belong in the file.
    const flagged = rowsIn('listener').filter((row) => !row.positional && flags[row.flag] !== undefined);
    if (flagged.length > 0 && file.instances.length > 1) {
      throw new ConfigError(
        `--${flagged.map((row) => row.flag).join(', --')}: ${args.config} has ${file.instances.length} instances; set this per instance in the file`,
      );
    }
    for (const own of file.instances) inputs.push({ ...overFile(given, own, file), ...override });
  } else {
    if (!args.endpoint)
      throw new ConfigError(
        'an ENDPOINT (the RDS endpoint name, Azure server name or Cloud SQL connection name) or --config FILE is needed',
      );
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
    for (const where of [
      instance.listen && formatHostPort(instance.listen),
      instance.unixSocket && `${instance.unixSocket.dir} port ${instance.unixSocket.port}`,
    ]) {
      if (!where || where.endsWith(':0')) continue;
      const other = seen.get(where);
      if (other !== undefined) throw new ConfigError(`instances[${other}] and instances[${i}] both listen on ${where}`);
      seen.set(where, i);
    }
  });

  const top: Readonly<Record<string, unknown>> = file ?? {};
  /** A process-wide setting: the flag (or its variable), else the file's top level, else the table's default. */
  const layered = (row: OptionRow): unknown => flags[row.flag] ?? top[fileKey(row)] ?? defaultOf(row, command);
  // Each layer holds the row's kind: yargs and the file's schema checked it.
  const setting = <F extends Flag>(flag: F) => layered(option(flag)) as ValueOf<F> | undefined;
  // A choice from the file is checked here, as yargs checked the flag's; named as the file writes it
  // (`log: { level }` is "log level").
  for (const row of rowsIn('process')) {
    const value = layered(row);
    if (row.kind === 'choice' && value !== undefined && !row.choices.includes(String(value))) {
      throw new ConfigError(`${fileKey(row).replaceAll('.', ' ')}: "${String(value)}" is not ${choiceList(row.choices)}`);
    }
  }
  // Every timeout has a default in the table.
  const config: ProxyConfig = Object.freeze({
    instances: Object.freeze(instances),
    startupTimeoutMs: ms(setting('startup-timeout')!),
    connectTimeoutMs: ms(setting('connect-timeout')!),
    maxConnections: setting('max-connections'),
    shutdownGraceMs: ms(setting('shutdown-grace')!),
  });
  const httpText = setting('http');
  const format = setting('log-format');
  return {
    config,
    warnings,
    http: httpText === undefined ? undefined : asConfigError(() => parseHostPort(httpText, '--http', null)),
    requireCredentials: setting('require-credentials') === true,
    minSigtermDelayMs: ms(setting('min-sigterm-delay')!),
    exitZeroOnSigterm: setting('exit-zero-on-sigterm') === true,
    // The level has a default for serve and run; both are among their choices, checked above.
    log: { level: setting('log-level')!, format: format !== undefined && isChoice('log-format', format) ? format : undefined },
  };
}

function logOptions(log: { level: string; format: LogFormat | undefined }) {
  return { level: log.level, format: log.format ?? (process.stderr.isTTY ? 'pretty' : 'json') };
}

/** `serve`: the proxy until a signal; resolves to the exit code. */
async function serveCommand(args: Args<'serve'>, env: NodeJS.ProcessEnv): Promise<number> {
  const settings = serveConfig(args, env);
  const log = createLogger(logOptions(settings.log));
  for (const warning of settings.warnings) log.warn(warning);
  routeProcessWarnings(log);
  const code = await serve(settings.config, {
    http: settings.http,
    requireCredentials: settings.requireCredentials,
    minSigtermDelayMs: settings.minSigtermDelayMs,
    exitZeroOnSigterm: settings.exitZeroOnSigterm,
    log,
    // SIGHUP: the file read again, with the same flags and environment over it.
    reload: args.config ? () => serveConfig(args, env) : undefined,
  });
  await flush(log);
  return code;
}

/**
 * token, doctor: the instance their ENDPOINT names, from the command line; with --config, the file's
 * instance of that endpoint (its identity and `users:`), the command line over it.
 */
function commandInstance(args: Args<'token' | 'doctor'>, env: NodeJS.ProcessEnv) {
  const given = { ...instanceInput(args), listen: null };
  if (!args.config) return resolveInstance(given, envRegion(env));
  const file = loadConfigFile(args.config);
  const wanted = asConfigError(() => endpointKey(given.endpoint));
  const same = (text: string) => endpointKey(text) === wanted;
  const own = file.instances.find((instance) => same(instance.endpoint));
  if (!own) {
    throw new ConfigError(`${args.config} has no instance for ${wanted} (it has ${file.instances.map((i) => i.endpoint).join(', ')})`);
  }
  return resolveInstance({ ...overFile(given, own, file), endpoint: own.endpoint, listen: null }, envRegion(env));
}

/** An endpoint as compared between the command line and a file: a Cloud SQL connection name, or host:port (any case). */
function endpointKey(text: string): string {
  const cloudSql = parseCloudSqlName(text);
  if (cloudSql) return `${cloudSql.instance.connectionName}:${cloudSql.port ?? DEFAULT_PG_PORT}`;
  const { host, port } = parseHostPort(text, 'endpoint');
  return formatHostPort({ host: host.toLowerCase(), port });
}

/** `token`: one token on stdout and nothing else there; errors on stderr. */
async function token(args: Args<'token'>, env: NodeJS.ProcessEnv): Promise<number> {
  const { instance, warnings } = commandInstance(args, env);
  const log = createLogger({ level: 'warn', format: process.stderr.isTTY ? 'pretty' : 'json' });
  for (const warning of warnings) log.warn(warning);
  routeProcessWarnings(log);
  const identities = new Identities({ mfa: terminalMfa() });
  const { CloudCredentials } = await import('./clouds/credentials.js');
  const clouds = new CloudCredentials();
  try {
    const { signToken } = await import('./commands/token.js');
    // Required (demandOption): yargs refused the command line without it.
    process.stdout.write(`${await signToken(instance, args.user!, identities, clouds)}\n`);
    return ExitCode.Ok;
  } catch (err) {
    const tried = err instanceof NoCredentialsError && err.tried.length > 0 ? `\n  sources tried: ${err.describeTried()}` : '';
    process.stderr.write(
      `pg-iam-proxy: cannot ${instance.cloud === 'aws' ? 'sign' : 'get'} a token: ${redactSecrets((err as Error).message)}${tried}\n`,
    );
    return ExitCode.Failure;
  } finally {
    identities.close();
    clouds.close();
    await flush(log);
  }
}

/** `run`: the proxy on a private unix socket for the life of one command. */
async function run(args: RunArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const [command, ...commandArgs] = (args['--'] ?? []).map(String);
  if (!command) throw new ConfigError('run: no command given: pg-iam-proxy run ENDPOINT [options] -- CMD [ARGS...]');
  if (args.user !== undefined && (args.user === '' || Buffer.byteLength(args.user) > 63))
    throw new ConfigError('--user: a PostgreSQL user name of 1 to 63 bytes');
  // Absolute (libpq reads a PGHOST starting with / as a socket directory) and without commas (a host list).
  const dir = resolve(await mkdtemp(join(tmpdir(), 'pg-iam-proxy-')));
  if (dir.includes(',')) {
    await rm(dir, { recursive: true, force: true });
    throw new ConfigError(`run: the temporary directory ${dir} contains a comma, which libpq would read as a host list: set TMPDIR`);
  }
  try {
    const { config, warnings, log: logSettings } = serveConfig(args, env, { listen: null, unixSocket: dir, unixSocketMode: '0600' }, 'run');
    const log = createLogger(logOptions(logSettings));
    for (const warning of warnings) log.warn(warning);
    routeProcessWarnings(log);
    const identities = new Identities({ log, mfa: terminalMfa() });
    const { runWithProxy } = await import('./commands/run.js');
    const code = await runWithProxy(config, {
      command,
      args: commandArgs,
      user: args.user,
      env,
      log,
      identities,
      keepAwsEnv: args['keep-aws-env'] === true,
    });
    identities.close();
    await flush(log);
    return code;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `doctor`: every check in order, printed for people or as JSON; 0 only when a real login succeeded. */
async function doctor(args: Args<'doctor'>, env: NodeJS.ProcessEnv): Promise<number> {
  const { instance, warnings } = commandInstance(args, env);
  const log = createLogger({ level: 'silent', format: 'json' });
  routeProcessWarnings(log);
  const identities = new Identities({ mfa: terminalMfa() });
  const { CloudCredentials } = await import('./clouds/credentials.js');
  const clouds = new CloudCredentials();
  try {
    const { formatReport, runDoctor } = await import('./commands/doctor.js');
    const report = await runDoctor(instance, {
      // Required (demandOption): yargs refused the command line without it.
      user: args.user!,
      database: args.database ?? defaultFor('database', 'doctor')!,
      connectTimeoutMs: ms(args['connect-timeout'] ?? defaultFor('connect-timeout', 'doctor')!),
      identities,
      configWarnings: warnings,
      clouds,
      regionSource: args.region ? 'flag' : regionFromEndpoint(instance.endpoint.host) ? 'endpoint' : 'env',
    });
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report, process.stdout.isTTY === true));
    return report.ok ? ExitCode.Ok : ExitCode.Failure;
  } finally {
    identities.close();
    clouds.close();
  }
}

/** Node's process warnings (the SDK's Node version notice among them) as log lines, not stray stderr text. */
function routeProcessWarnings(log: Logger): void {
  process.removeAllListeners('warning');
  // At info: they are notices for operators (the SDK's Node version notice), not faults of the proxy.
  process.on('warning', (warning) => log.info({ warning: { name: warning.name, message: warning.message } }, 'Node.js warning'));
}

/** The log's last lines, however stderr is connected: never a reason not to exit (finishLog). */
const flush = (log: Logger) => finishLog(log);

/** Entry point: parse, run, resolve to the exit code. Never throws. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    const invocation = await parseCommandLine(argv, env);
    switch (invocation?.command) {
      case undefined:
        return ExitCode.Ok; // help or the version, printed
      case 'serve':
        return await serveCommand(invocation.args, env);
      case 'token':
        return await token(invocation.args, env);
      case 'run':
        return await run(invocation.args, env);
      case 'doctor':
        return await doctor(invocation.args, env);
    }
  } catch (err) {
    process.stderr.write(`pg-iam-proxy: ${(err as Error).message}\n`);
    return err instanceof ConfigError || !(err instanceof Error) || (err as Error).name === 'YError' ? ExitCode.Usage : ExitCode.Failure;
  }
}
