// The option table (options.ts) in process: the configuration a command line, its PG_IAM_PROXY_* variables
// and a config file resolve to, as rows of {desc, args, env, file, want}; and every row of the table in
// yargs' help, in the file's schema and in config.example.yaml.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify } from 'yaml';
import { fromEnv, parseCommandLine } from '../src/cli.js';
import { serveConfig, type ServeSettings } from '../src/commands/settings.js';
import { loadConfigFile } from '../src/config-file.js';
import { checkNumber } from '../src/config.js';
import { COMMANDS, OPTIONS, defaultOf, envName, fileKey, option, rowsIn, type Command, type OptionRow } from '../src/options.js';

const dir = mkdtempSync(join(tmpdir(), 'options-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const writeConfig = (yaml: string) => {
  const path = join(dir, `c${++n}.yaml`);
  writeFileSync(path, yaml);
  return path;
};

const E = 'mydb.abc123xyz.us-east-1.rds.amazonaws.com';
const E2 = 'reports.abc123xyz.eu-west-1.rds.amazonaws.com';
const one = (extra = '') => `instances:\n  - endpoint: ${E}\n${extra}`;
const two = (first = '', second = '') =>
  `instances:\n  - endpoint: ${E}\n${first}  - endpoint: ${E2}\n    listen: 127.0.0.1:5433\n${second}`;

interface Row {
  readonly desc: string;
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
  /** YAML; given as --config. */
  readonly file?: string;
  readonly command?: 'serve' | 'run';
  /** What the settings must match, or the error. */
  readonly want: object | RegExp;
}

/** The settings a row resolves to, through the same parser and resolver the command runs. */
async function resolve(row: Row): Promise<ServeSettings> {
  const env = row.env ?? {};
  const argv = [
    ...(row.command === 'run' ? ['run'] : []),
    ...(row.args ?? (row.file === undefined ? [E] : [])),
    ...(row.file === undefined ? [] : ['--config', writeConfig(row.file)]),
  ];
  if (row.command === 'run') argv.push('--', 'true');
  const invocation = await parseCommandLine(argv, env);
  if (invocation?.command === 'serve') return serveConfig(invocation.args, env);
  if (invocation?.command === 'run') return serveConfig(invocation.args, env, {}, 'run');
  throw new Error(`not a serve or run command line: ${argv.join(' ')}`);
}

/** One subtest of rows, each resolved and compared. */
function table(name: string, rows: readonly Row[]): void {
  t.test(name, async (t) => {
    for (const row of rows) {
      if (row.want instanceof RegExp) await t.rejects(resolve(row), { name: 'ConfigError', message: row.want }, row.desc);
      else t.match(await resolve(row), row.want, row.desc);
    }
  });
}

const instance = (want: object) => ({ config: { instances: [want] } });
const instances = (...want: object[]) => ({ config: { instances: want } });

table('precedence: flags > PG_IAM_PROXY_* > file > defaults, for a process-wide setting', [
  { desc: 'the default', want: { config: { startupTimeoutMs: 15_000 } } },
  { desc: 'the file', file: `${one()}startupTimeout: 3\n`, want: { config: { startupTimeoutMs: 3_000 } } },
  {
    desc: 'the variable over the file',
    file: `${one()}startupTimeout: 3\n`,
    env: { PG_IAM_PROXY_STARTUP_TIMEOUT: '4' },
    want: { config: { startupTimeoutMs: 4_000 } },
  },
  {
    desc: 'the flag over the variable',
    args: ['--startup-timeout', '5'],
    file: `${one()}startupTimeout: 3\n`,
    env: { PG_IAM_PROXY_STARTUP_TIMEOUT: '4' },
    want: { config: { startupTimeoutMs: 5_000 } },
  },
  { desc: 'a nested key', file: `${one()}log: { level: debug, format: pretty }\n`, want: { log: { level: 'debug', format: 'pretty' } } },
  {
    desc: 'the variable over a nested key',
    file: `${one()}log: { level: debug }\n`,
    env: { PG_IAM_PROXY_LOG_LEVEL: 'error' },
    want: { log: { level: 'error', format: undefined } },
  },
]);

table("identity: the flag, else the instance's own, else the file's aws: block", [
  {
    desc: 'aws: for every instance',
    file: `aws: { profile: shared, region: us-west-2 }\n${two()}`,
    want: instances({ region: 'us-west-2', identity: { profile: 'shared' } }, { region: 'us-west-2', identity: { profile: 'shared' } }),
  },
  {
    desc: "an instance's own over aws:",
    file: `aws: { profile: shared }\n${two('', '    profile: own\n    region: eu-west-1\n')}`,
    want: instances({ region: 'us-east-1', identity: { profile: 'shared' } }, { region: 'eu-west-1', identity: { profile: 'own' } }),
  },
  {
    desc: 'no aws: and no own: the endpoint decides the region',
    file: two(),
    want: instances({ region: 'us-east-1', identity: {} }, { region: 'eu-west-1', identity: {} }),
  },
  {
    desc: 'the variable over both, for every instance',
    file: `aws: { profile: shared }\n${two('', '    profile: own\n')}`,
    env: { PG_IAM_PROXY_PROFILE: 'env' },
    want: instances({ identity: { profile: 'env' } }, { identity: { profile: 'env' } }),
  },
  {
    desc: 'the flag over the variable',
    args: ['--profile', 'flag'],
    file: two(),
    env: { PG_IAM_PROXY_PROFILE: 'env' },
    want: instances({ identity: { profile: 'flag' } }, { identity: { profile: 'flag' } }),
  },
  {
    desc: 'every identity key',
    file:
      'aws:\n  roleArn: arn:aws:iam::123456789012:role/app\n  roleSessionName: orders\n  externalId: tenant-42\n  mfaSerial: arn:aws:iam::123456789012:mfa/alice\n' +
      one(),
    want: instance({
      identity: {
        roleArn: 'arn:aws:iam::123456789012:role/app',
        roleSessionName: 'orders',
        externalId: 'tenant-42',
        mfaSerial: 'arn:aws:iam::123456789012:mfa/alice',
      },
    }),
  },
  {
    desc: 'a role setting without a role, from the variables',
    env: { PG_IAM_PROXY_EXTERNAL_ID: 'tenant-42' },
    want: /--external-id is a setting of --role-arn, which is not given/,
  },
]);

table("client side: the flag, else the instance's own, else the file's top level", [
  {
    desc: 'the top level for every instance',
    file: `allowUsers: [app]\nclientTls: off\n${two()}`,
    want: instances({ allowUsers: ['app'], clientTls: { mode: 'off' } }, { allowUsers: ['app'], clientTls: { mode: 'off' } }),
  },
  {
    desc: "an instance's own over the top level",
    file: `allowUsers: [app]\n${two('', '    allowUsers: [reports]\n    clientTls: off\n')}`,
    want: instances({ allowUsers: ['app'], clientTls: { mode: 'auto' } }, { allowUsers: ['reports'], clientTls: { mode: 'off' } }),
  },
  {
    desc: 'the variable over both: one value',
    file: `allowUsers: [app]\n${one('    allowUsers: [own]\n')}`,
    env: { PG_IAM_PROXY_ALLOW_USER: 'env_user' },
    want: instance({ allowUsers: ['env_user'] }),
  },
  {
    desc: 'the flag, repeated, over the variable',
    args: ['--allow-user', 'a', '--allow-user', 'b'],
    file: two(),
    env: { PG_IAM_PROXY_ALLOW_USER: 'env_user' },
    want: instances({ allowUsers: ['a', 'b'] }, { allowUsers: ['a', 'b'] }),
  },
  { desc: 'none: any user', want: instance({ allowUsers: undefined, allowDatabases: undefined, clientPasswordFile: undefined }) },
]);

table("a listener's settings: the flag, else the instance's own; with several instances, only the file", [
  { desc: 'the default', want: instance({ listen: { host: '127.0.0.1', port: 5432 }, unixSocket: undefined }) },
  { desc: "the instance's own", file: one('    listen: 127.0.0.1:6001\n'), want: instance({ listen: { port: 6001 } }) },
  {
    desc: 'the variable over a one-instance file',
    file: one('    listen: 127.0.0.1:6001\n'),
    env: { PG_IAM_PROXY_LISTEN: '127.0.0.1:6002' },
    want: instance({ listen: { port: 6002 } }),
  },
  {
    desc: 'an empty variable leaves it to the file',
    file: one('    listen: 127.0.0.1:6001\n'),
    env: { PG_IAM_PROXY_LISTEN: '' },
    want: instance({ listen: { port: 6001 } }),
  },
  {
    desc: 'the flag over the variable',
    args: ['--listen', '127.0.0.1:6003'],
    file: one('    listen: 127.0.0.1:6001\n'),
    env: { PG_IAM_PROXY_LISTEN: '127.0.0.1:6002' },
    want: instance({ listen: { port: 6003 } }),
  },
  {
    desc: 'a flag with several instances',
    args: ['--connect-to', '127.0.0.1:1', '--db-user', 'u'],
    file: two(),
    want: /^--connect-to, --db-user: .*c\d+\.yaml has 2 instances; set this per instance in the file$/,
  },
  {
    desc: 'a variable with several instances',
    env: { PG_IAM_PROXY_CA_FILE: '/ca.pem' },
    file: two(),
    want: /^--ca-file: .* has 2 instances/,
  },
  { desc: 'the endpoint twice', args: [E], file: one(), want: /give the endpoint either on the command line or in .*, not both/ },
  {
    desc: 'the endpoint from its variable',
    args: [],
    env: { PG_IAM_PROXY_ENDPOINT: `${E2}:6432` },
    want: instance({ endpoint: { host: E2, port: 6432 }, region: 'eu-west-1' }),
  },
]);

table('every kind, from each source', [
  // string
  { desc: 'string: flag', args: [E, '--connect-to', '127.0.0.1:15432'], want: instance({ connectTo: { host: '127.0.0.1', port: 15432 } }) },
  { desc: 'string: variable', env: { PG_IAM_PROXY_DB_USER: 'app_iam' }, want: instance({ dbUser: 'app_iam' }) },
  { desc: 'string: file, a number read as text', file: one('    dbUser: 1234\n'), want: instance({ dbUser: '1234' }) },
  // strings
  {
    desc: 'strings: one variable is one value, spaces and all',
    env: { PG_IAM_PROXY_ALLOW_DATABASE: 'a b' },
    want: instance({ allowDatabases: ['a b'] }),
  },
  {
    desc: 'strings: a file scalar is a list of one',
    file: `allowDatabases: orders\n${one()}`,
    want: instance({ allowDatabases: ['orders'] }),
  },
  {
    desc: 'strings: a file list',
    file: one('    allowDatabases: [orders, reports]\n'),
    want: instance({ allowDatabases: ['orders', 'reports'] }),
  },
  // boolean
  { desc: 'boolean: the default', want: { requireCredentials: false } },
  { desc: 'boolean: flag', args: [E, '--require-credentials'], want: { requireCredentials: true } },
  { desc: 'boolean: variable "true"', env: { PG_IAM_PROXY_REQUIRE_CREDENTIALS: 'true' }, want: { requireCredentials: true } },
  {
    desc: 'boolean: any other variable text is false',
    env: { PG_IAM_PROXY_REQUIRE_CREDENTIALS: 'yes' },
    want: { requireCredentials: false },
  },
  { desc: 'boolean: file', file: `requireCredentials: true\n${one()}`, want: { requireCredentials: true } },
  {
    desc: 'boolean: a variable "false" over the file',
    file: `requireCredentials: true\n${one()}`,
    env: { PG_IAM_PROXY_REQUIRE_CREDENTIALS: 'false' },
    want: { requireCredentials: false },
  },
  {
    desc: 'boolean: --no- over the file',
    args: ['--no-require-credentials'],
    file: `requireCredentials: true\n${one()}`,
    want: { requireCredentials: false },
  },
  {
    desc: 'boolean: the network listener it allows',
    args: [E, '--listen', '0.0.0.0:0', '--allow-unauthenticated-network-clients'],
    want: instance({ listen: { host: '0.0.0.0' } }),
  },
  { desc: 'boolean: not given, the network listener is refused', args: [E, '--listen', '0.0.0.0:0'], want: /is not a loopback address/ },
  // mode
  {
    desc: 'mode: the default',
    args: [E, '--unix-socket', '/tmp'],
    want: instance({ unixSocket: { dir: '/tmp', port: 5432, mode: 0o600 } }),
  },
  { desc: 'mode: flag', args: [E, '--unix-socket', '/tmp', '--unix-socket-mode', '0660'], want: instance({ unixSocket: { mode: 0o660 } }) },
  {
    desc: 'mode: variable',
    args: [E, '--unix-socket', '/tmp'],
    env: { PG_IAM_PROXY_UNIX_SOCKET_MODE: '640' },
    want: instance({ unixSocket: { mode: 0o640 } }),
  },
  {
    desc: 'mode: file, the digits as written',
    file: one('    unixSocket: /tmp\n    unixSocketMode: 0660\n'),
    want: instance({ unixSocket: { mode: 0o660 } }),
  },
  {
    desc: 'mode: one the owner cannot connect with',
    args: [E, '--unix-socket', '/tmp', '--unix-socket-mode', '0444'],
    want: /--unix-socket-mode: "0444" is not a file mode the owner can connect with/,
  },
  // choice
  { desc: 'choice: the default', want: { ...instance({ clientTls: { mode: 'auto' } }), log: { level: 'info' } } },
  { desc: 'choice: flag', args: [E, '--client-tls', 'off'], want: instance({ clientTls: { mode: 'off' } }) },
  { desc: 'choice: variable', env: { PG_IAM_PROXY_CLIENT_TLS: 'off' }, want: instance({ clientTls: { mode: 'off' } }) },
  { desc: 'choice: file, per instance', file: one('    clientTls: off\n'), want: instance({ clientTls: { mode: 'off' } }) },
  {
    desc: 'choice: a variable not among the choices',
    env: { PG_IAM_PROXY_CLIENT_TLS: 'on' },
    want: /Invalid values:\s+Argument: client-tls, Given: "on", Choices: "auto", "off"/,
  },
  {
    desc: 'choice: a file value not among the choices, per instance',
    file: one('    clientTls: on\n'),
    want: /c\d+\.yaml:2: instances\[0\]: --client-tls: "on" is not auto or off/,
  },
  {
    desc: 'choice: a file value not among the choices, top level',
    file: `log: { format: xml }\n${one()}`,
    want: /^log format: "xml" is not json or pretty$/,
  },
  {
    desc: 'choice: the log level',
    file: `log: { level: loud }\n${one()}`,
    want: /^log level: "loud" is not one of trace, debug, info, warn, error, fatal, silent$/,
  },
  { desc: "choice: run's own default", command: 'run', args: [E], want: { log: { level: 'warn' } } },
  // seconds
  { desc: 'seconds: the defaults', want: { config: { startupTimeoutMs: 15_000, connectTimeoutMs: 10_000, shutdownGraceMs: 30_000 } } },
  { desc: 'seconds: a fraction', args: [E, '--shutdown-grace', '0.25'], want: { config: { shutdownGraceMs: 250 } } },
  { desc: 'seconds: zero grace is allowed', file: `shutdownGrace: 0\n${one()}`, want: { config: { shutdownGraceMs: 0 } } },
  {
    desc: 'seconds: zero timeout is not',
    file: `connectTimeout: 0\n${one()}`,
    want: /c\d+\.yaml:1: connectTimeout: 0 is not a number of seconds greater than 0 and at most 3600/,
  },
  {
    desc: 'seconds: a unit in a variable',
    env: { PG_IAM_PROXY_CONNECT_TIMEOUT: '30s' },
    want: /^--connect-timeout \(PG_IAM_PROXY_CONNECT_TIMEOUT\): "30s" is not a number of seconds greater than 0 and at most 3600$/,
  },
  {
    desc: 'seconds: text in the file',
    file: `startupTimeout: soon\n${one()}`,
    want: /c\d+\.yaml:1: startupTimeout: a number is expected, not "soon"/,
  },
  // count
  { desc: 'count: unlimited by default', want: { config: { maxConnections: undefined } } },
  { desc: 'count: variable', env: { PG_IAM_PROXY_MAX_CONNECTIONS: ' 5 ' }, want: { config: { maxConnections: 5 } } },
  { desc: 'count: file', file: `maxConnections: 7\n${one()}`, want: { config: { maxConnections: 7 } } },
  {
    desc: 'count: a fraction',
    args: [E, '--max-connections', '1.5'],
    want: /--max-connections \(PG_IAM_PROXY_MAX_CONNECTIONS\): 1\.5 is not a whole number from 1 to 1000000/,
  },
  {
    desc: 'count: too many, in the file',
    file: `maxConnections: 1000001\n${one()}`,
    want: /:1: maxConnections: 1000001 is not a whole number from 1 to 1000000/,
  },
  // the process's own
  { desc: 'http: variable', env: { PG_IAM_PROXY_HTTP: '127.0.0.1:9090' }, want: { http: { host: '127.0.0.1', port: 9090 } } },
  { desc: 'http: file', file: `http: 0.0.0.0:9091\n${one()}`, want: { http: { host: '0.0.0.0', port: 9091 } } },
  { desc: 'http: needs a port', env: { PG_IAM_PROXY_HTTP: '127.0.0.1' }, want: /--http/ },
]);

t.test("each command reads the variables of its own options, and no other's", async (t) => {
  const env = {
    PG_IAM_PROXY_LISTEN: '127.0.0.1:1',
    PG_IAM_PROXY_HTTP: '127.0.0.1:2',
    PG_IAM_PROXY_CONNECT_TO: '127.0.0.1:3',
    PG_IAM_PROXY_USER: 'env_user',
    PG_IAM_PROXY_BOGUS: 'x',
  };
  t.same(fromEnv('token', env), { 'connect-to': '127.0.0.1:3', user: 'env_user' });
  t.same(fromEnv('serve', env), { listen: '127.0.0.1:1', 'connect-to': '127.0.0.1:3', http: '127.0.0.1:2' });
  t.match(
    await parseCommandLine(['token', E], env),
    { command: 'token', args: { endpoint: E, 'connect-to': '127.0.0.1:3', user: 'env_user' } },
    "the required --user from its variable; serve's variables ignored",
  );
  t.notOk('listen' in (await parseCommandLine(['token', E], env))!.args);
  await t.rejects(
    parseCommandLine(['token', E, '--user', 'u', '--listen', '127.0.0.1:1'], {}),
    { name: 'ConfigError', message: /Unknown argument: listen/ },
    'a flag that does not apply is still an error',
  );
  await t.rejects(parseCommandLine(['doctor', E], {}), {
    name: 'ConfigError',
    message: /^doctor needs --user \(the DB user to log in as\)/,
  });
  t.match(await parseCommandLine(['doctor', E, '--user', 'u'], { PG_IAM_PROXY_DATABASE: 'orders', PG_IAM_PROXY_JSON: 'true' }), {
    args: { database: 'orders', json: true },
  });
  t.match(await parseCommandLine(['run', E, '--', 'psql', '-c', 'SELECT 1'], { PG_IAM_PROXY_KEEP_AWS_ENV: 'true' }), {
    command: 'run',
    args: { 'keep-aws-env': true, '--': ['psql', '-c', 'SELECT 1'] },
  });
});

/** A value of each row's kind, as a flag's text and as what it reads as. */
function sample(row: OptionRow): { text: string; value: unknown } {
  switch (row.kind) {
    case 'strings':
      return { text: 'x_1', value: ['x_1'] };
    case 'boolean':
      return { text: 'true', value: true };
    case 'mode':
      return { text: '0660', value: '0660' };
    case 'choice':
      return { text: row.choices.at(-1)!, value: row.choices.at(-1) };
    case 'seconds':
    case 'count':
      return { text: String(row.range.max), value: row.range.max };
    default:
      return { text: 'x_1', value: 'x_1' };
  }
}

/** The command line that runs `command` with nothing else needed but `row`. */
const minimal = (command: Command, row: OptionRow): string[] => [
  ...(command === 'serve' ? [] : [command]),
  E,
  ...(row.required?.includes(command) || command === 'serve' || command === 'run' ? [] : ['--user', 'u']),
];
const flagIn = (flag: string, text: string) => new RegExp(`(^|\\s)--${flag}(?![\\w-])`, 'm').test(text);

t.test('every row: in the help of its commands, and only theirs; read from its flag and its variable', async (t) => {
  for (const command of COMMANDS) {
    let help = '';
    t.equal(await parseCommandLine(command === 'serve' ? ['--help'] : [command, '--help'], {}, (text) => (help += text)), undefined);
    for (const row of OPTIONS) {
      const has = row.commands.includes(command);
      if (row.positional) t.equal(/^ {2}endpoint {2}/m.test(help), has, `${command} --help: ${row.flag}`);
      else t.equal(flagIn(row.flag, help), has, `${command} --help: --${row.flag}${has ? '' : ' absent'}`);
      if (!has || row.positional) continue;
      const { text, value } = sample(row);
      const viaFlag = await parseCommandLine(
        [...minimal(command, row), row.kind === 'boolean' ? `--${row.flag}` : `--${row.flag}=${text}`],
        {},
      );
      t.same((viaFlag!.args as Record<string, unknown>)[row.flag], value, `${command} --${row.flag}`);
      const viaEnv = await parseCommandLine(minimal(command, row), { [envName(row.flag)]: text });
      t.same((viaEnv!.args as Record<string, unknown>)[row.flag], value, `${command} ${envName(row.flag)}`);
    }
  }
});

/** The places in a file a row may be set: the top level, `aws:`, an instance. */
const placesOf = (row: OptionRow): Array<'top' | 'aws' | 'instance'> =>
  row.scope === 'process'
    ? ['top']
    : row.scope === 'client'
      ? ['top', 'instance']
      : row.scope === 'identity'
        ? ['aws', 'instance']
        : row.scope === 'listener'
          ? ['instance']
          : [];

/** A file's value of one row at one place, by the key the row names. */
function valueAt(file: ReturnType<typeof loadConfigFile>, place: 'top' | 'aws' | 'instance', row: OptionRow, i = 0): unknown {
  const holder: Readonly<Record<string, unknown>> = place === 'top' ? file : place === 'aws' ? (file.aws ?? {}) : file.instances[i]!;
  return holder[fileKey(row)];
}

/** A YAML mapping with `value` at the row's key, nested where the key has a dot. */
function nested(row: OptionRow, value: unknown): Record<string, unknown> {
  return fileKey(row)
    .split('.')
    .reduceRight<unknown>((inner, part) => ({ [part]: inner }), value) as Record<string, unknown>;
}

t.test('every row that a file may set is in its schema, at each of its places', async (t) => {
  for (const row of OPTIONS) {
    const places = placesOf(row);
    t.equal(places.length === 0, row.scope === 'command', `${row.flag}: a file setting unless it is the command line's own`);
    for (const place of places) {
      const { value } = sample(row);
      const yamlValue = row.positional ? `${E}:6432` : value;
      const endpoint = { endpoint: E };
      const doc =
        place === 'top'
          ? { ...nested(row, yamlValue), instances: [endpoint] }
          : place === 'aws'
            ? { aws: nested(row, yamlValue), instances: [endpoint] }
            : { instances: [{ ...endpoint, ...nested(row, yamlValue) }] };
      const file = loadConfigFile(writeConfig(stringify(doc)));
      t.same(valueAt(file, place, row), row.positional ? `${E}:6432` : value, `${row.flag} at ${place}: ${fileKey(row)}`);
    }
  }
  t.throws(
    () => loadConfigFile(writeConfig(`aws: { listen: 127.0.0.1:1 }\n${one()}`)),
    /:1: aws\.listen: unknown key \(known here: region, profile, roleArn, roleSessionName, externalId, mfaSerial\)/,
    "a listener's key is not aws:'s",
  );
  t.throws(
    () => loadConfigFile(writeConfig(`${one('    maxConnections: 5\n')}`)),
    /:3: instances\[0\]\.maxConnections: unknown key/,
    "a process key is not an instance's",
  );
  t.throws(
    () => loadConfigFile(writeConfig(`config: other.yaml\n${one()}`)),
    /:1: config: unknown key/,
    "the command line's own are not the file's",
  );
});

t.test('config.example.yaml shows every key a file may set, commented or not, each at a place it belongs', async (t) => {
  const path = fileURLToPath(new URL('../../config.example.yaml', import.meta.url));
  const keys = new Set(rowsIn('listener', 'identity', 'client', 'process').map((row) => fileKey(row).split('.').at(-1)!));
  // The commented keys too: uncommented, the whole example must still be a valid file.
  const all = readFileSync(path, 'utf8').replace(/^(\s*)# ([a-z][A-Za-z]*):(?=\s)/gm, (line, indent: string, key: string) =>
    keys.has(key) ? `${indent}${key}:` : line,
  );
  t.ok(parseYaml(all), 'the uncommented example is YAML');
  const file = loadConfigFile(writeConfig(all));
  for (const row of rowsIn('listener', 'identity', 'client', 'process')) {
    const found = placesOf(row).some((place) =>
      place === 'instance'
        ? file.instances.some((_, i) => valueAt(file, place, row, i) !== undefined)
        : valueAt(file, place, row) !== undefined,
    );
    t.ok(found, `config.example.yaml: ${fileKey(row)} (--${row.flag})`);
  }
  t.equal(option('allow-user').key, 'allowUsers', 'a file key that is not the flag in camelCase');
});

t.test("every default is a value of its row's kind, and help shows it", async (t) => {
  for (const row of OPTIONS) {
    for (const command of row.commands) {
      const value = defaultOf(row, command);
      if (value === undefined) continue;
      if (row.kind === 'seconds' || row.kind === 'count') t.equal(checkNumber(row, value, row.flag), value, `${row.flag}: ${value}`);
      else if (row.kind === 'choice') t.ok(row.choices.includes(String(value)), `${row.flag}: ${value} is one of its choices`);
      else t.equal(typeof value, row.kind === 'boolean' ? 'boolean' : 'string', `${row.flag}: ${value}`);
      let help = '';
      await parseCommandLine(command === 'serve' ? ['--help'] : [command, '--help'], {}, (text) => (help += text));
      t.match(
        help,
        new RegExp(`--${row.flag}(?![\\w-])((?!\\n {2}--)[^])*\\[default: ${String(value).replaceAll('.', '\\.')}\\]`),
        `${command} --help: --${row.flag} [default: ${value}], on its own lines`,
      );
    }
  }
  t.equal(defaultOf(option('log-level'), 'run'), 'warn', 'a default of its own for one command');
});
