// The command line: argv and PG_IAM_PROXY_* parsed into a command and its options, then handed to that
// command's body in commands/ (serve-command.ts, token-command.ts, run-command.ts, doctor-command.ts).
// The options come from one table (options.ts): each command's flags, their PG_IAM_PROXY_* variables and
// the config file's keys are its rows.
import yargs, { type Argv, type Options } from 'yargs';
import { checkNumber, ConfigError } from './config.js';
import { version } from './version.js';
import { COMMANDS, defaultOf, describeFor, envName, OPTIONS, rowsOf, type Args, type Command, type OptionRow } from './options.js';
import type { RunArgs } from './commands/run-command.js';
import { ExitCode } from './commands/serve.js';
import { serveCommand } from './commands/serve-command.js';

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

/** Entry point: parse, run, resolve to the exit code. Never throws. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    const invocation = await parseCommandLine(argv, env);
    switch (invocation?.command) {
      case undefined:
        return ExitCode.Ok; // help or the version, printed
      case 'serve':
        return await serveCommand(invocation.args, env);
      // The other commands load when asked for: serve's start-up stays as short as it was.
      case 'token':
        return await (await import('./commands/token-command.js')).tokenCommand(invocation.args, env);
      case 'run':
        return await (await import('./commands/run-command.js')).runCommand(invocation.args, env);
      case 'doctor':
        return await (await import('./commands/doctor-command.js')).doctorCommand(invocation.args, env);
    }
  } catch (err) {
    process.stderr.write(`pg-iam-proxy: ${(err as Error).message}\n`);
    return err instanceof ConfigError || !(err instanceof Error) || (err as Error).name === 'YError' ? ExitCode.Usage : ExitCode.Failure;
  }
}
