// Every option, one row each: its flag and PG_IAM_PROXY_* variable, its
// key in the config file, the kind of value it takes, where in the configuration it belongs, the
// commands that have it, its default and its help text. The command line (cli.ts), the file's schema
// (config-file.ts) and the InstanceInput type (config.ts) are derived from these rows, so a new option is
// one row here and the code that reads its value.
import { CLOUDS } from './clouds/names.js';

export const COMMANDS = ['serve', 'run', 'token', 'doctor'] as const;
export type Command = (typeof COMMANDS)[number];

/**
 * Where a setting belongs, which decides where the config file may set it and what it falls back to:
 * - listener: one instance's own (per instance in the file; a flag sets it only for a one-instance file)
 * - identity: who signs, and for which region (flag > the instance's own > the file's `aws:` block)
 * - client: what clients may do and must prove (flag > the instance's own > the file's top level)
 * - process: the whole process (flag > the file's top level)
 * - command: the command line only
 */
export type Scope = 'listener' | 'identity' | 'client' | 'process' | 'command';

/**
 * What an option's value is. seconds and count are numbers within `range` (checkNumber): Node's timers
 * take at most 2^31 - 1 ms (24.8 days) and fire at once beyond that, so every bound is checked; count is
 * a whole number. mode is a file mode, octal text as written ('0660'). strings is repeatable.
 */
export type Kind = 'string' | 'strings' | 'boolean' | 'mode' | 'choice' | 'seconds' | 'count';

export interface NumberRange {
  readonly min: number;
  /** Whether `min` itself is refused (a timeout of 0 would fire at once). */
  readonly exclusive: boolean;
  readonly max: number;
}

type PerCommand<T> = { readonly [C in Command]?: T };
type Value = string | number | boolean;

interface Common {
  /** The flag, kebab-case; the environment variable is PG_IAM_PROXY_ and the flag in capitals. */
  readonly flag: string;
  /** The config file's key where it is not the flag in camelCase; a dot nests it (`log.level`: `log: { level }`). */
  readonly key?: string;
  readonly scope: Scope;
  readonly commands: readonly Command[];
  /** The command's positional argument rather than a flag. */
  readonly positional?: true;
  /** The commands that cannot run without it. */
  readonly required?: readonly Command[];
  /** Used when no flag, variable or file sets it, and shown in help; per command where they differ. */
  readonly default?: Value | PerCommand<Value>;
  /** The help text; per command where it says something different to each. */
  readonly describe: string | PerCommand<string>;
}

export type NumberRow = Common & { readonly kind: 'seconds' | 'count'; readonly range: NumberRange };
export type ChoiceRow = Common & { readonly kind: 'choice'; readonly choices: readonly string[] };
/** One option: a number carries its range, a choice its choices. */
export type OptionRow = NumberRow | ChoiceRow | (Common & { readonly kind: Exclude<Kind, 'seconds' | 'count' | 'choice'> });

export const DEFAULT_LISTEN = '127.0.0.1:5432';
/** `--listen none`: no TCP listener, the unix socket alone (a multi-user host: file modes decide who connects). */
export const NO_LISTEN = 'none';

const ALL = COMMANDS;
/** The commands that run the engine. */
const PROXY = ['serve', 'run'] as const;
/** Pooling: what the proxy does, and what doctor checks against the server. */
const POOLING = ['serve', 'run', 'doctor'] as const;
const SERVE = ['serve'] as const;
const TIMEOUT = { min: 0, exclusive: true, max: 3600 } as const;

/** The rows, in the order help lists them; a file's keys are listed in this order too. */
const TABLE = [
  {
    flag: 'endpoint',
    kind: 'string',
    scope: 'listener',
    commands: ALL,
    positional: true,
    describe:
      'the database: an RDS endpoint name[:port], an Azure NAME.postgres.database.azure.com[:port] or a Cloud SQL PROJECT:REGION:INSTANCE connection name; tokens are made for it and TLS verifies it',
  },
  {
    flag: 'config',
    kind: 'string',
    scope: 'command',
    commands: ['serve', 'token', 'doctor'],
    describe:
      'YAML file: several instances and global settings (see config.example.yaml); token and doctor take the instance of their ENDPOINT from it',
  },

  {
    flag: 'listen',
    kind: 'string',
    scope: 'listener',
    commands: SERVE,
    default: DEFAULT_LISTEN,
    describe: `TCP listener ADDR:PORT, or ${NO_LISTEN} to serve on --unix-socket alone`,
  },
  {
    flag: 'unix-socket',
    kind: 'string',
    scope: 'listener',
    commands: SERVE,
    describe: 'also listen on DIR/.s.PGSQL.<port>, for psql -h DIR',
  },
  {
    flag: 'unix-socket-mode',
    kind: 'mode',
    scope: 'listener',
    commands: SERVE,
    default: '0600',
    describe: 'file mode of the unix socket (who may connect)',
  },
  {
    flag: 'connect-to',
    kind: 'string',
    scope: 'listener',
    commands: ALL,
    describe: 'dial HOST:PORT instead of the endpoint (a tunnel); TLS and tokens stay for the endpoint',
  },
  {
    flag: 'ca-file',
    kind: 'string',
    scope: 'listener',
    commands: ALL,
    describe:
      "PEM bundle to trust for the server certificate (default: AWS the bundled RDS CAs, Azure Node's public roots, Cloud SQL the instance's server CA from the SQL Admin API)",
  },
  {
    flag: 'cloud',
    kind: 'choice',
    choices: [...CLOUDS],
    scope: 'listener',
    commands: ALL,
    describe: "the endpoint's cloud when its name does not tell (default: from the endpoint's form)",
  },
  {
    flag: 'sqladmin-api-endpoint',
    kind: 'string',
    scope: 'listener',
    commands: ALL,
    describe:
      "Cloud SQL: the SQL Admin API's base URL, for the instance's addresses and server CA (default: https://sqladmin.googleapis.com)",
  },
  {
    flag: 'ip-type',
    kind: 'string',
    scope: 'listener',
    commands: ALL,
    describe:
      "Cloud SQL: which of the instance's addresses to dial, public, private or psc (Private Service Connect), or a comma list taken in order (public,private: the first the instance has) (default: public, as cloud-sql-proxy)",
  },
  { flag: 'db-user', kind: 'string', scope: 'listener', commands: PROXY, describe: 'log in as this DB user whatever the client sends' },

  {
    flag: 'region',
    kind: 'string',
    scope: 'identity',
    commands: ALL,
    describe: 'signing region (default: from the endpoint name, else AWS_REGION)',
  },
  {
    flag: 'profile',
    kind: 'string',
    scope: 'identity',
    commands: ALL,
    describe: 'AWS profile to sign with (default: the SDK default chain, AWS_PROFILE)',
  },
  {
    flag: 'role-arn',
    kind: 'string',
    scope: 'identity',
    commands: ALL,
    describe: 'IAM role to assume from the base credentials, and sign as',
  },
  {
    flag: 'role-session-name',
    kind: 'string',
    scope: 'identity',
    commands: ALL,
    describe: 'session name for --role-arn (default: pg-iam-proxy@HOSTNAME)',
  },
  { flag: 'external-id', kind: 'string', scope: 'identity', commands: ALL, describe: "external ID the role's trust policy demands" },
  {
    flag: 'mfa-serial',
    kind: 'string',
    scope: 'identity',
    commands: ALL,
    describe: "MFA device the role's trust policy demands; the code is asked on the terminal",
  },

  {
    flag: 'client-tls',
    kind: 'choice',
    choices: ['auto', 'off'],
    scope: 'client',
    commands: PROXY,
    default: 'auto',
    describe: "answer clients' SSLRequest with a certificate made at start (auto), or decline (off)",
  },
  {
    flag: 'client-tls-cert',
    kind: 'string',
    scope: 'client',
    commands: PROXY,
    describe: 'serve this PEM certificate to clients (with --client-tls-key), e.g. for sslmode=verify-full',
  },
  { flag: 'client-tls-key', kind: 'string', scope: 'client', commands: PROXY, describe: 'the PEM private key of --client-tls-cert' },
  {
    flag: 'client-password-file',
    kind: 'string',
    scope: 'client',
    commands: PROXY,
    describe: 'clients must prove this password (SCRAM-SHA-256) before anything goes upstream',
  },
  {
    flag: 'allow-user',
    key: 'allowUsers',
    kind: 'strings',
    scope: 'client',
    commands: PROXY,
    describe: 'sign only for these DB users (repeatable); others get 28000',
  },
  {
    flag: 'allow-database',
    key: 'allowDatabases',
    kind: 'strings',
    scope: 'client',
    commands: PROXY,
    describe: 'connect only to these databases (repeatable)',
  },
  {
    flag: 'allow-unauthenticated-network-clients',
    kind: 'boolean',
    scope: 'client',
    commands: PROXY,
    describe: 'listen beyond loopback without --client-password-file: anyone who reaches the port logs in as the IAM user',
  },

  {
    flag: 'pool-mode',
    kind: 'choice',
    choices: ['off', 'session', 'transaction'],
    scope: 'client',
    commands: POOLING,
    default: 'off',
    describe:
      'off: a login per client, bytes spliced as they are; session: a client holds a logged-in server from a pool for its whole session; transaction: from its first message after idle to the end of each transaction',
  },
  {
    flag: 'pool-size',
    kind: 'count',
    range: { min: 1, exclusive: false, max: 10_000 },
    scope: 'client',
    commands: POOLING,
    default: 10,
    describe: 'servers per pool (a pool per DB user and startup parameters)',
  },
  {
    flag: 'max-server-connections',
    kind: 'count',
    range: { min: 1, exclusive: false, max: 100_000 },
    scope: 'client',
    commands: POOLING,
    describe: 'servers per instance over all its pools (default: twice --pool-size)',
  },
  {
    flag: 'pool-wait-timeout',
    kind: 'seconds',
    range: TIMEOUT,
    scope: 'client',
    commands: POOLING,
    default: 30,
    describe: 'seconds a client waits for a pooled server before FATAL 53300',
  },
  {
    flag: 'server-reset-query',
    kind: 'string',
    scope: 'client',
    commands: POOLING,
    default: 'DISCARD ALL',
    describe: 'run on a pooled server between clients; it must leave the server idle',
  },
  {
    flag: 'server-idle-timeout',
    kind: 'seconds',
    range: { min: 0, exclusive: true, max: 86_400 },
    scope: 'client',
    commands: POOLING,
    default: 600,
    describe: 'seconds a pooled server may stay idle before it is closed',
  },
  {
    flag: 'server-lifetime',
    kind: 'seconds',
    range: { min: 0, exclusive: true, max: 604_800 },
    scope: 'client',
    commands: POOLING,
    default: 3600,
    describe: 'seconds after which a pooled server is closed when its client leaves',
  },
  {
    flag: 'idle-transaction-timeout',
    kind: 'seconds',
    range: { min: 0, exclusive: true, max: 86_400 },
    scope: 'client',
    commands: POOLING,
    describe:
      'seconds a pooled client may hold its server idle in a transaction (or in the middle of a message) before FATAL 25P03 (default: no limit)',
  },
  {
    flag: 'max-prepared-statements',
    kind: 'count',
    range: { min: 1, exclusive: false, max: 100_000 },
    scope: 'client',
    commands: POOLING,
    default: 200,
    describe: 'transaction mode: named prepared statements kept per server (least recently used closed first)',
  },

  {
    flag: 'max-connections',
    kind: 'count',
    range: { min: 1, exclusive: false, max: 1_000_000 },
    scope: 'process',
    commands: PROXY,
    describe: 'clients beyond this get FATAL 53300 (default: unlimited)',
  },
  {
    flag: 'startup-timeout',
    kind: 'seconds',
    range: TIMEOUT,
    scope: 'process',
    commands: PROXY,
    default: 15,
    describe: 'seconds a client has to finish its startup',
  },
  {
    flag: 'connect-timeout',
    kind: 'seconds',
    range: TIMEOUT,
    scope: 'process',
    commands: ALL,
    default: 10,
    describe: 'seconds to get credentials, connect, handshake and log in upstream',
  },
  {
    flag: 'shutdown-grace',
    kind: 'seconds',
    range: { min: 0, exclusive: false, max: 86_400 },
    scope: 'process',
    commands: SERVE,
    default: 30,
    describe: 'on SIGTERM/SIGINT, seconds to wait for sessions to end',
  },
  {
    flag: 'min-sigterm-delay',
    kind: 'seconds',
    range: { min: 0, exclusive: false, max: 86_400 },
    scope: 'process',
    commands: SERVE,
    default: 0,
    describe: 'after SIGTERM, keep accepting new clients for S seconds (the app may still be finishing requests), then drain',
  },
  {
    flag: 'exit-zero-on-sigterm',
    kind: 'boolean',
    scope: 'process',
    commands: SERVE,
    default: false,
    describe: 'exit 0 after SIGTERM or POST /quitquitquit even when the drain is cut short (default: 143)',
  },
  {
    flag: 'http',
    kind: 'string',
    scope: 'process',
    commands: SERVE,
    describe: 'serve /healthz, /startup, /readyz and /metrics on ADDR:PORT, and POST /quitquitquit to loopback peers',
  },
  {
    flag: 'require-credentials',
    kind: 'boolean',
    scope: 'process',
    commands: SERVE,
    default: false,
    describe: 'exit 3 when no AWS credentials can be had at start, instead of serving and reporting not ready',
  },
  {
    flag: 'log-level',
    key: 'log.level',
    kind: 'choice',
    choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
    scope: 'process',
    commands: PROXY,
    default: { serve: 'info', run: 'warn' },
    describe: 'the least severe log lines written',
  },
  {
    flag: 'log-format',
    key: 'log.format',
    kind: 'choice',
    choices: ['json', 'pretty'],
    scope: 'process',
    commands: PROXY,
    describe: 'default: pretty on a terminal, else json',
  },

  {
    flag: 'user',
    kind: 'string',
    scope: 'command',
    commands: ['run', 'token', 'doctor'],
    required: ['token', 'doctor'],
    describe: {
      run: 'the DB user: sets PGUSER for the command',
      token: 'the DB user the token is for',
      doctor: 'the DB user to log in as',
    },
  },
  {
    flag: 'keep-aws-env',
    kind: 'boolean',
    scope: 'command',
    commands: ['run'],
    describe:
      "pass AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (and Azure's AZURE_CLIENT_SECRET, IDENTITY_HEADER, ...) on to the command (by default it gets none: the proxy gets its tokens)",
  },
  {
    flag: 'database',
    kind: 'string',
    scope: 'command',
    commands: ['doctor'],
    default: 'postgres',
    describe: 'the database for the test login',
  },
  {
    flag: 'json',
    kind: 'boolean',
    scope: 'command',
    commands: ['doctor'],
    default: false,
    describe: 'print one JSON document with every check',
  },
] as const satisfies readonly OptionRow[];

/** The rows, for code that walks them all. */
export const OPTIONS: readonly OptionRow[] = TABLE;

// The types the rows give, for code that reads one option by name.
type Row = (typeof TABLE)[number];
export type Flag = Row['flag'];
type RowOf<F extends Flag> = Extract<Row, { flag: F }>;
type Camel<S extends string> = S extends `${infer Head}-${infer Tail}` ? `${Head}${Capitalize<Camel<Tail>>}` : S;
type KeyOf<R extends Row> = R extends { key: infer K extends string } ? K : Camel<R['flag']>;
type ValueOfKind<K extends Kind> = K extends 'strings'
  ? readonly string[]
  : K extends 'boolean'
    ? boolean
    : K extends 'seconds' | 'count'
      ? number
      : K extends 'mode'
        ? string | number
        : string;
/** An option's value once read: a choice is plain text until the code that uses it checks it. */
export type ValueOf<F extends Flag> = ValueOfKind<RowOf<F>['kind']>;
export type NumberFlag = Extract<Row, { kind: 'seconds' | 'count' }>['flag'];
export type ChoiceFlag = Extract<Row, { kind: 'choice' }>['flag'];
export type ChoiceOf<F extends ChoiceFlag> = RowOf<F>['choices'][number];

/** Every option's value, by flag. */
type Values = { [R in Row as R['flag']]?: ValueOfKind<R['kind']> };
type FlagsIn<R, C> = R extends { flag: infer F; commands: readonly (infer Has)[] } ? (C extends Has ? F : never) : never;
/**
 * A command's options as the command line gives them (flags over PG_IAM_PROXY_*), by flag; C may be
 * several commands. (A Pick of one type, so that Args<'serve'> is Args<'serve' | 'run'> too.)
 */
export type Args<C extends Command> = Pick<Values, FlagsIn<Row, C> & Flag>;

/** The settings of some scopes by their config-file key: one place in the file (an instance, `aws:`, the top level). */
export type Settings<S extends Scope> = { [R in Row as R['scope'] extends S ? KeyOf<R> : never]?: ValueOfKind<R['kind']> | undefined };

/** Where a row's value is in the file, and what it is called there. */
export const fileKey = (row: OptionRow): string => row.key ?? row.flag.replace(/-(.)/g, (_, c: string) => c.toUpperCase());

/** PG_IAM_PROXY_SHUTDOWN_GRACE for shutdown-grace. */
export const envName = (flag: string): string => `PG_IAM_PROXY_${flag.toUpperCase().replaceAll('-', '_')}`;

const BY_FLAG = new Map(OPTIONS.map((row) => [row.flag, row]));

/** One row, by its flag. */
export function option<F extends Flag>(flag: F): RowOf<F> {
  return BY_FLAG.get(flag) as RowOf<F>;
}

/** The rows of these scopes, in table order. */
export const rowsIn = (...scopes: Scope[]): OptionRow[] => OPTIONS.filter((row) => scopes.includes(row.scope));

/** The rows a command has, in table order. */
export const rowsOf = (command: Command): OptionRow[] => OPTIONS.filter((row) => row.commands.includes(command));

/** A row's default for a command (the same for all unless the row says otherwise). */
export function defaultOf(row: OptionRow, command: Command = 'serve'): Value | undefined {
  const value = row.default;
  return typeof value === 'object' ? value[command] : value;
}

/** The default of one option, typed: what the command uses when nothing sets it. */
export function defaultFor<F extends Flag>(flag: F, command: Command = 'serve'): ValueOf<F> | undefined {
  return defaultOf(option(flag), command) as ValueOf<F> | undefined;
}

/** Its help text for a command. */
export function describeFor(row: OptionRow, command: Command): string {
  return typeof row.describe === 'string' ? row.describe : (row.describe[command] ?? '');
}

/** Whether a value is one of the option's choices. */
export function isChoice<F extends ChoiceFlag>(flag: F, value: string): value is ChoiceOf<F> {
  const row: ChoiceRow = option(flag);
  return row.choices.includes(value);
}

/** "auto or off"; "one of trace, debug, ...". */
export const choiceList = (choices: readonly string[]): string =>
  choices.length === 2 ? choices.join(' or ') : `one of ${choices.join(', ')}`;
