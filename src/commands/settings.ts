// The settings a command runs with: its options as the command line gave them (flags over PG_IAM_PROXY_*,
// merged and checked by yargs in cli.ts) laid over the --config file's, then over the defaults. Cross-field
// validation happens here, once, for every command; what comes out is frozen.
import { cloudOf } from '../clouds/table.js';
import { parseCloudSqlName } from '../gcp/instance.js';
import { asConfigError, ConfigError, ms, resolveCloud, resolveInstance, type InstanceInput, type ProxyConfig } from '../config.js';
import { loadConfigFile, type FileSettings } from '../config-file.js';
import { DEFAULT_PG_PORT, formatHostPort, parseHostPort, type HostPort } from '../host-port.js';
import type { LogFormat } from '../log.js';
import {
  choiceList,
  defaultOf,
  fileKey,
  isChoice,
  option,
  rowsIn,
  type Args,
  type Command,
  type Flag,
  type OptionRow,
  type ValueOf,
} from '../options.js';

/** The instance as the command line and PG_IAM_PROXY_* describe it: each instance row's flag, under its file key. */
function instanceInput(args: Args<Command>): InstanceInput {
  const flags: Readonly<Record<string, unknown>> = args;
  const input = Object.fromEntries(rowsIn('listener', 'identity', 'client').map((row) => [fileKey(row), flags[row.flag]]));
  // The keys are InstanceInput's (both come from the same rows), each value checked for its row's kind by yargs.
  return { ...input, endpoint: args.endpoint ?? '' } as InstanceInput;
}

/**
 * One instance of the config file with the command line's settings laid over it. Listener settings: the
 * flag, else the file instance's own (an empty flag, PG_IAM_PROXY_LISTEN=, leaves it to the file);
 * identity: the flag, else the instance's own, else the file's `aws:`; client settings: the flag, else the
 * instance's own, else the file's top level.
 */
function flagsOverFileInstance(
  fromFlags: InstanceInput,
  fileInstance: InstanceInput & { line: number },
  file: FileSettings,
): InstanceInput & { line: number } {
  const flags: Readonly<Record<string, unknown>> = fromFlags;
  const instance: Readonly<Record<string, unknown>> = fileInstance;
  // `aws:` is the AWS instances' identity; another cloud's instance has none to inherit.
  const aws = cloudOf(resolveCloud({ cloud: fromFlags.cloud ?? fileInstance.cloud, endpoint: fileInstance.endpoint })).fileAwsIdentity
    ? file.aws
    : undefined;
  const shared: Readonly<Record<string, Readonly<Record<string, unknown>>>> = { identity: aws ?? {}, client: file };
  const merged: Record<string, unknown> = { ...fileInstance };
  for (const row of rowsIn('listener', 'identity', 'client')) {
    if (row.positional) continue; // the endpoint is the file's: both is an error
    const key = fileKey(row);
    const flag = flags[key];
    if (row.scope === 'listener') merged[key] = flag === undefined || flag === '' ? instance[key] : flag;
    else merged[key] = flag ?? instance[key] ?? shared[row.scope]?.[key];
  }
  // Identities per DB user: the file's, then the instance's own over them, user by user.
  if (aws && (file.users || fileInstance.users)) merged.users = { ...file.users, ...fileInstance.users };
  else if (fileInstance.users) merged.users = fileInstance.users;
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
 * serve and run: argv, PG_IAM_PROXY_* (merged by yargs) and the config file in, frozen config out.
 * Precedence: flags > environment > file > defaults. `override` replaces instance settings (run's socket).
 */
export function serveConfig(
  args: Args<'serve' | 'run'>,
  env: NodeJS.ProcessEnv,
  override: Partial<InstanceInput> = {},
  command: 'serve' | 'run' = 'serve',
): ServeSettings {
  const file = args.config ? loadConfigFile(args.config) : undefined;
  const fromFlags = instanceInput(args);
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
    for (const fileInstance of file.instances) inputs.push({ ...flagsOverFileInstance(fromFlags, fileInstance, file), ...override });
  } else {
    if (!args.endpoint)
      throw new ConfigError(
        'an ENDPOINT (the RDS endpoint name, Azure server name or Cloud SQL connection name) or --config FILE is needed',
      );
    inputs.push({ ...fromFlags, ...override });
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

/**
 * token, doctor: the instance their ENDPOINT names, from the command line; with --config, the file's
 * instance of that endpoint (its identity and `users:`), the command line over it.
 */
export function commandInstance(args: Args<'token' | 'doctor'>, env: NodeJS.ProcessEnv) {
  const fromFlags = { ...instanceInput(args), listen: null };
  if (!args.config) return resolveInstance(fromFlags, envRegion(env));
  const file = loadConfigFile(args.config);
  const wanted = asConfigError(() => endpointKey(fromFlags.endpoint));
  const same = (text: string) => endpointKey(text) === wanted;
  const fileInstance = file.instances.find((instance) => same(instance.endpoint));
  if (!fileInstance) {
    throw new ConfigError(`${args.config} has no instance for ${wanted} (it has ${file.instances.map((i) => i.endpoint).join(', ')})`);
  }
  return resolveInstance(
    { ...flagsOverFileInstance(fromFlags, fileInstance, file), endpoint: fileInstance.endpoint, listen: null },
    envRegion(env),
  );
}

/** An endpoint as compared between the command line and a file: a Cloud SQL connection name, or host:port (any case). */
function endpointKey(text: string): string {
  const cloudSql = parseCloudSqlName(text);
  if (cloudSql) return `${cloudSql.instance.connectionName}:${cloudSql.port ?? DEFAULT_PG_PORT}`;
  const { host, port } = parseHostPort(text, 'endpoint');
  return formatHostPort({ host: host.toLowerCase(), port });
}
