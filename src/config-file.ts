// The YAML config file (config.example.yaml shows every key): read, checked against the schema (the option
// table's rows, options.ts) with errors that name the file, the line and the key, unknown keys refused.
// Values are checked for meaning by the same functions as flags (config.ts), with the line added.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Node } from 'yaml';
import { checkNumber, ConfigError, type InstanceInput } from './config.js';
import { fileKey, rowsIn, type Kind, type OptionRow, type Scope, type Settings } from './options.js';

// The YAML library loads only when a config file is given.
type Yaml = typeof import('yaml');
let yaml: Yaml | undefined;
const load = (): Yaml => (yaml ??= createRequire(import.meta.url)('yaml') as Yaml);

/**
 * The keys of one place in the file (the top level, `aws:`, an instance): each a row of the option table,
 * a block of keys written nested and read as the row's dotted key (`log: { level }` is log.level), or a
 * reader of its own (`aws:`, `instances:`).
 */
interface Keys {
  readonly [key: string]: OptionRow | Keys | Reader;
}
type Reader = (node: Node, path: string, at: At) => unknown;
type At = (node: Node | null | undefined) => string;

const isRow = (shape: OptionRow | Keys): shape is OptionRow => typeof shape.flag === 'string' && typeof shape.kind === 'string';

/** The keys of the rows of these scopes, in table order, nested as their file keys say. */
function keysOf(...scopes: Scope[]): Keys {
  const keys: Record<string, OptionRow | Keys> = {};
  for (const row of rowsIn(...scopes)) {
    const path = fileKey(row).split('.');
    let place = keys;
    for (const part of path.slice(0, -1)) place = (place[part] ??= {}) as Record<string, OptionRow | Keys>;
    place[path.at(-1)!] = row;
  }
  return keys;
}

/** An instance: its listener, its identity, its clients. */
const INSTANCE = keysOf('listener', 'identity', 'client');
/** `aws:`: the identity every instance signs with unless it names its own. */
const AWS = keysOf('identity');

/**
 * `users:`: an identity per DB user (`app_rw: { roleArn: ... }`), each whole in itself (the identity keys it
 * gives, nothing inherited); users not listed sign with the instance's identity.
 */
const readUsers: Reader = (node, path, at) => {
  const { isMap, isScalar } = load();
  if (!isMap(node)) throw new ConfigError(`${at(node)}: ${path}: a mapping of DB user names to identities is expected`);
  const users: Record<string, Record<string, unknown>> = {};
  for (const pair of node.items) {
    const user = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    if (user === '' || Buffer.byteLength(user) > 63) {
      throw new ConfigError(`${at(pair.key as Node)}: ${path}: "${user}" is not a PostgreSQL user name of 1 to 63 bytes`);
    }
    users[user] = readPlace(pair.value as Node, USER, `${path}.${user}`, at);
  }
  return users;
};

/** A DB user's identity: who signs (the region is the instance's, as the endpoint is). */
const { region: _region, ...USER } = AWS;

/** An instance: its listener, its identity, its clients, and identities per DB user. */
const INSTANCE_KEYS: Keys = { ...INSTANCE, users: readUsers };

/** The top level: the process, `aws:` defaults for every instance's identity, client-side defaults, the instances. */
const FILE: Keys = {
  ...keysOf('process'),
  aws: (node, path, at) => readPlace(node, AWS, path, at),
  users: readUsers,
  ...keysOf('client'),
  instances: (node, path, at) => {
    const { isSeq } = load();
    if (!isSeq(node)) throw new ConfigError(`${at(node)}: ${path}: a list is expected`);
    return node.items.map((item, i) => ({
      ...readPlace(item as Node, INSTANCE_KEYS, `${path}[${i}]`, at),
      line: Number(
        at(item as Node)
          .split(':')
          .at(-1),
      ),
    }));
  },
};

/**
 * What a config file says, in the shape the CLI merges with flags and PG_IAM_PROXY_*: each place's
 * settings by their file keys (log.level as one key).
 */
export type FileSettings = Settings<'process' | 'client'> & {
  readonly aws?: Settings<'identity'>;
  /** Identities per DB user, for every instance (an instance's own `users:` entries win). */
  readonly users?: UserIdentities;
  readonly instances: ReadonlyArray<InstanceInput & { readonly line: number }>;
};

/** `users:` as read: DB user name to identity keys. */
export type UserIdentities = Readonly<Record<string, Settings<'identity'>>>;

/** Read and check a config file; every error names the file and, where it can, the line. */
export function loadConfigFile(path: string): FileSettings {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(
      `--config ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
    );
  }
  const { LineCounter, parseDocument, isMap } = load();
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true });
  const at = (node: Node | null | undefined) => (node?.range ? `${path}:${lines.linePos(node.range[0]).line}` : path);
  const first = doc.errors[0];
  if (first) throw new ConfigError(`${path}:${first.linePos?.[0].line ?? 1}: ${first.message.split('\n')[0]}`);
  if (!isMap(doc.contents)) throw new ConfigError(`${at(doc.contents)}: the file must be a mapping of settings (see config.example.yaml)`);
  const value = readPlace(doc.contents, FILE, '', at);
  const instances = value.instances as Array<Record<string, unknown>> | undefined;
  if (!instances || instances.length === 0)
    throw new ConfigError(`${at(doc.contents)}: instances: at least one instance (with its endpoint) is needed`);
  instances.forEach((instance, i) => {
    if (!instance.endpoint)
      throw new ConfigError(`${path}:${instance.line}: instances[${i}].endpoint: missing (the RDS endpoint name[:port])`);
  });
  // Every key was a row's and every value was checked for its row's kind: the shape FileSettings describes.
  return value as FileSettings;
}

/** One mapping of keys, each value checked for its row's kind; nested blocks are read into the same place. */
function readPlace(node: Node, keys: Keys, path: string, at: At, into: Record<string, unknown> = {}): Record<string, unknown> {
  const { isMap, isScalar } = load();
  if (!isMap(node)) throw new ConfigError(`${at(node)}: ${path || 'the file'}: a mapping of keys is expected`);
  for (const pair of node.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    const name = path ? `${path}.${key}` : key;
    const shape = keys[key];
    if (shape === undefined)
      throw new ConfigError(`${at(pair.key as Node)}: ${name}: unknown key (known here: ${Object.keys(keys).join(', ')})`);
    if (pair.value === null || (isScalar(pair.value) && pair.value.value === null)) continue;
    const value = pair.value as Node;
    if (typeof shape === 'function') into[key] = shape(value, name, at);
    else if (isRow(shape)) into[fileKey(shape)] = readValue(value, shape, name, at);
    else readPlace(value, shape, name, at, into);
  }
  return into;
}

/** What each kind is called in an error. */
const EXPECTED: Record<Kind, string> = {
  string: 'string',
  strings: 'string',
  choice: 'string',
  boolean: 'boolean',
  mode: 'file mode',
  seconds: 'number',
  count: 'number',
};

function readValue(node: Node, row: OptionRow, path: string, at: At): unknown {
  const { isScalar, isSeq } = load();
  if (row.kind === 'strings') {
    const items = isSeq(node) ? node.items : [node];
    return items.map((item, i) => readValue(item as Node, { ...row, kind: 'string' }, isSeq(node) ? `${path}[${i}]` : path, at));
  }
  if (!isScalar(node)) throw new ConfigError(`${at(node)}: ${path}: a ${EXPECTED[row.kind]} is expected`);
  const value = node.value;
  switch (row.kind) {
    case 'mode':
      // 0600 in YAML 1.2 is the number 600: read the digits as written.
      if (typeof value === 'number' || typeof value === 'string') return String(node.source ?? value);
      break;
    case 'seconds':
    case 'count':
      // The same bounds as the flag's (maxConnections is --max-connections).
      if (typeof value === 'number') return checkNumber(row, value, `${at(node)}: ${path}`);
      break;
    case 'boolean':
      if (typeof value === 'boolean') return value;
      break;
    default:
      // A choice is checked for meaning where the flag's is (the log level, --client-tls), with the line added.
      if (typeof value === 'string' || typeof value === 'number') return String(value);
  }
  throw new ConfigError(`${at(node)}: ${path}: a ${EXPECTED[row.kind]} is expected, not ${JSON.stringify(value)}`);
}
