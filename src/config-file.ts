// The YAML config file (config.example.yaml shows every key): read, checked against the schema with
// errors that name the file, the line and the key, unknown keys refused. Values are checked for meaning
// by the same functions as flags (config.ts), with the line added.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Node } from 'yaml';
import { checkNumber, ConfigError, NUMBER_SETTINGS, type InstanceInput, type NumberSetting } from './config.js';

// The YAML library loads only when a config file is given.
type Yaml = typeof import('yaml');
let yaml: Yaml | undefined;
const load = (): Yaml => (yaml ??= createRequire(import.meta.url)('yaml') as Yaml);

type Kind = 'string' | 'number' | 'boolean' | 'mode' | 'strings';
interface MapSchema {
  readonly [key: string]: Kind | MapSchema | readonly [MapSchema];
}

const IDENTITY: MapSchema = { profile: 'string', roleArn: 'string', roleSessionName: 'string', externalId: 'string', mfaSerial: 'string' };

/** Client-side settings: top level for every instance, or per instance. */
const CLIENT: MapSchema = {
  clientTls: 'string',
  clientTlsCert: 'string',
  clientTlsKey: 'string',
  clientPasswordFile: 'string',
  allowUsers: 'strings',
  allowDatabases: 'strings',
  allowUnauthenticatedNetworkClients: 'boolean',
};

const INSTANCE: MapSchema = {
  endpoint: 'string',
  listen: 'string',
  unixSocket: 'string',
  unixSocketMode: 'mode',
  connectTo: 'string',
  caFile: 'string',
  dbUser: 'string',
  region: 'string',
  ...IDENTITY,
  ...CLIENT,
};

const FILE: MapSchema = {
  http: 'string',
  log: { level: 'string', format: 'string' },
  aws: { region: 'string', ...IDENTITY },
  maxConnections: 'number',
  startupTimeout: 'number',
  connectTimeout: 'number',
  shutdownGrace: 'number',
  requireCredentials: 'boolean',
  ...CLIENT,
  instances: [INSTANCE],
};

/** What a config file says, in the shape the CLI merges with flags and PG_IAM_PROXY_*. */
export interface FileSettings {
  readonly http?: string;
  readonly log?: { readonly level?: string; readonly format?: string };
  readonly aws?: Partial<Pick<InstanceInput, 'region' | 'profile' | 'roleArn' | 'roleSessionName' | 'externalId' | 'mfaSerial'>>;
  readonly maxConnections?: number;
  readonly startupTimeout?: number;
  readonly connectTimeout?: number;
  readonly shutdownGrace?: number;
  readonly requireCredentials?: boolean;
  readonly clientTls?: string;
  readonly clientTlsCert?: string;
  readonly clientTlsKey?: string;
  readonly clientPasswordFile?: string;
  readonly allowUsers?: readonly string[];
  readonly allowDatabases?: readonly string[];
  readonly allowUnauthenticatedNetworkClients?: boolean;
  readonly instances: ReadonlyArray<InstanceInput & { readonly line: number }>;
}

/** Read and check a config file; every error names the file and, where it can, the line. */
export function loadConfigFile(path: string): FileSettings {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`--config ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  const { LineCounter, parseDocument, isMap } = load();
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true });
  const at = (node: Node | null | undefined) => (node?.range ? `${path}:${lines.linePos(node.range[0]).line}` : path);
  const first = doc.errors[0];
  if (first) throw new ConfigError(`${path}:${first.linePos?.[0].line ?? 1}: ${first.message.split('\n')[0]}`);
  if (!isMap(doc.contents)) throw new ConfigError(`${at(doc.contents)}: the file must be a mapping of settings (see config.example.yaml)`);
  const value = check(doc.contents, FILE, '', at) as Record<string, unknown>;
  const instances = value.instances as Array<InstanceInput & { line: number }> | undefined;
  if (!instances || instances.length === 0) throw new ConfigError(`${at(doc.contents)}: instances: at least one instance (with its endpoint) is needed`);
  instances.forEach((instance, i) => {
    if (!instance.endpoint) throw new ConfigError(`${path}:${instance.line}: instances[${i}].endpoint: missing (the RDS endpoint name[:port])`);
  });
  return value as unknown as FileSettings;
}

function check(node: Node, schema: MapSchema | Kind | readonly [MapSchema], path: string, at: (n: Node | null | undefined) => string): unknown {
  const { isMap, isScalar, isSeq } = load();
  if (Array.isArray(schema)) {
    if (!isSeq(node)) throw new ConfigError(`${at(node)}: ${path}: a list is expected`);
    return node.items.map((item, i) => {
      const value = check(item as Node, schema[0] as MapSchema, `${path}[${i}]`, at) as Record<string, unknown>;
      return { ...value, line: Number(at(item as Node).split(':').at(-1)) };
    });
  }
  if (typeof schema === 'object') {
    if (!isMap(node)) throw new ConfigError(`${at(node)}: ${path || 'the file'}: a mapping of keys is expected`);
    const out: Record<string, unknown> = {};
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const name = path ? `${path}.${key}` : key;
      const sub = (schema as MapSchema)[key];
      if (sub === undefined) {
        throw new ConfigError(`${at(pair.key as Node)}: ${name}: unknown key (known here: ${Object.keys(schema).join(', ')})`);
      }
      if (pair.value === null || (isScalar(pair.value) && pair.value.value === null)) continue;
      out[key] = check(pair.value as Node, sub, name, at);
    }
    return out;
  }
  if (schema === 'strings') {
    const items = isSeq(node) ? node.items : [node];
    return items.map((item, i) => check(item as Node, 'string', isSeq(node) ? `${path}[${i}]` : path, at));
  }
  if (!isScalar(node)) throw new ConfigError(`${at(node)}: ${path}: a ${schema === 'mode' ? 'file mode' : schema} is expected`);
  const value = node.value;
  switch (schema) {
    case 'mode':
      // 0600 in YAML 1.2 is the number 600: read the digits as written.
      if (typeof value === 'number' || typeof value === 'string') return String(node.source ?? value);
      break;
    case 'number': {
      // The same bounds as the flag's (maxConnections is --max-connections).
      const flag = path.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`) as NumberSetting;
      if (typeof value === 'number' && flag in NUMBER_SETTINGS) return checkNumber(flag, value, `${at(node)}: ${path}`);
      if (typeof value === 'number' && Number.isFinite(value)) return value;
      break;
    }
    case 'boolean':
      if (typeof value === 'boolean') return value;
      break;
    default:
      if (typeof value === 'string' || typeof value === 'number') return String(value);
  }
  throw new ConfigError(`${at(node)}: ${path}: a ${schema === 'mode' ? 'file mode' : schema} is expected, not ${JSON.stringify(value)}`);
}
