// Startup parameters in pooling. A pool is for a DB user and database and only what cannot be changed
// with SET (an `options` the proxy cannot read, an unusual parameter): servers are opened without the
// tracked parameters below, and a server lent to a client first gets the client's values with SET (and
// RESET for those it has that the client did not ask for), as pgbouncer does with its tracked parameters.
// Names are compared in lower case, as PostgreSQL does; values are kept as the client sent their bytes.
import { checkUser, startupMessage, type StartupMessage, type StartupParam } from '../protocol/startup.js';
import { Frontend, frontendMessage } from '../protocol/frontend.js';
import type { PoolKey } from './pool.js';

/**
 * Settings a client may SET itself (PostgreSQL's "user" context), tracked per client: the ones drivers
 * and apps send at startup, and the usual `-c` options.
 */
export const TRACKED = new Set([
  'application_name',
  'client_encoding',
  'datestyle',
  'timezone',
  'intervalstyle',
  'standard_conforming_strings',
  'search_path',
  'extra_float_digits',
  'bytea_output',
  'client_min_messages',
  'default_transaction_isolation',
  'default_transaction_read_only',
  'default_transaction_deferrable',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'idle_session_timeout',
  'work_mem',
  'maintenance_work_mem',
  'temp_buffers',
  'jit',
  'lc_messages',
  'lc_monetary',
  'lc_numeric',
  'lc_time',
  'row_security',
  'synchronous_commit',
  'geqo',
  'random_page_cost',
  'effective_cache_size',
  'max_parallel_workers_per_gather',
  'plan_cache_mode',
  'timezone_abbreviations',
  'xmlbinary',
  'xmloption',
  'gin_fuzzy_search_limit',
]);

/** A client's startup, split for pooling. */
export interface SplitStartup {
  /** The parameters that key the pool (all but user, database and the tracked ones), as sent. */
  readonly keyed: readonly StartupParam[];
  /** The tracked parameters by lower-case name, the last value of each. */
  readonly tracked: ReadonlyMap<string, Buffer>;
}

/**
 * Split a client's startup parameters. `options` is tracked only when it is nothing but `-c name=value`
 * (or `--name=value`) of tracked names, without escapes; otherwise it keys the pool as it is.
 */
export function splitStartup(params: readonly StartupParam[]): SplitStartup {
  const keyed: StartupParam[] = [];
  const tracked = new Map<string, Buffer>();
  for (const param of params) {
    const name = param.name.toLowerCase();
    if (name === 'user' || name === 'database') continue;
    if (name === 'options') {
      const settings = trackedOptions(param.value);
      if (settings) for (const [n, v] of settings) tracked.set(n, v);
      else keyed.push(param);
    } else if (TRACKED.has(name)) tracked.set(name, param.value);
    else keyed.push(param);
  }
  return { keyed, tracked };
}

/** `-c a=1 --b=2` as tracked settings, or undefined when it holds anything else. */
function trackedOptions(value: Buffer): Map<string, Buffer> | undefined {
  const text = value.toString('latin1');
  if (text.includes('\\')) return undefined; // escaped spaces: read as PostgreSQL does, not here
  const words = text.split(/[ \t\n\r]+/).filter((w) => w !== '');
  const out = new Map<string, Buffer>();
  for (let i = 0; i < words.length; i++) {
    let setting: string;
    if (words[i] === '-c' && i + 1 < words.length) setting = words[++i]!;
    else if (words[i]!.startsWith('--')) setting = words[i]!.slice(2);
    else if (words[i]!.startsWith('-c') && words[i]!.length > 2) setting = words[i]!.slice(2);
    else return undefined;
    const eq = setting.indexOf('=');
    if (eq <= 0) return undefined;
    const name = setting.slice(0, eq).toLowerCase().replaceAll('-', '_');
    if (!TRACKED.has(name)) return undefined;
    out.set(name, Buffer.from(setting.slice(eq + 1), 'latin1'));
  }
  return out;
}

/**
 * One simple Query that takes a server from the tracked values `have` to the client's `want`: SET for
 * each that differs, RESET for each the client did not ask for; undefined when nothing differs. Values
 * are dollar-quoted (read literally whatever standard_conforming_strings says), client_encoding first.
 */
export function settingsQuery(
  want: ReadonlyMap<string, Buffer>,
  have: ReadonlyMap<string, Buffer>,
  /** What the server holds is not known (a reset query that may not reset): RESET ALL first. */
  resetAll = false,
): Buffer | undefined {
  const sql = settingsSql(want, resetAll ? new Map() : have);
  if (!resetAll && !sql) return undefined;
  return frontendMessage(
    Frontend.Query,
    Buffer.concat([...(resetAll ? [Buffer.from('RESET ALL;')] : []), ...(sql ? [sql] : []), Buffer.of(0)]),
  );
}

/** The statements of settingsQuery: SET or RESET for each tracked value that differs; undefined: none. */
export function settingsSql(want: ReadonlyMap<string, Buffer>, have: ReadonlyMap<string, Buffer>): Buffer | undefined {
  if (sameValues(want, have)) return undefined; // the common case, at every lend: checked without sorting
  const parts: Buffer[] = [];
  const names = [...new Set([...want.keys(), ...have.keys()])].sort((a, b) =>
    a === 'client_encoding' ? -1 : b === 'client_encoding' ? 1 : a < b ? -1 : 1,
  );
  for (const name of names) {
    const value = want.get(name);
    const current = have.get(name);
    if (value !== undefined && current !== undefined && value.equals(current)) continue;
    if (value === undefined) parts.push(Buffer.from(`RESET ${name};`));
    else {
      const tag = dollarTag(value);
      parts.push(Buffer.from(`SET ${name} TO ${tag}`), value, Buffer.from(`${tag};`));
    }
  }
  return parts.length === 0 ? undefined : Buffer.concat(parts);
}

function sameValues(a: ReadonlyMap<string, Buffer>, b: ReadonlyMap<string, Buffer>): boolean {
  if (a === b) return true;
  if (a.size !== b.size) return false;
  for (const [name, value] of a) if (!b.get(name)?.equals(value)) return false;
  return true;
}

/** The statement and portal of the proxy's own group in a session (the client's names reach the server). */
export const SETTINGS_NAME = 'pg_iam_proxy_settings';
const DO_TAG = '$pg_iam_proxy_do$';

/**
 * The settings of settingsQuery as a group of the extended protocol whose messages touch neither the
 * client's unnamed statement nor its portals (a Query would drop its unnamed statement): Parse and Bind of
 * a DO block under the proxy's own name, Execute, Close of both, Sync. Undefined: nothing differs, or a
 * value holds the block's quote (then a Query it is).
 */
export function settingsGroup(
  want: ReadonlyMap<string, Buffer>,
  have: ReadonlyMap<string, Buffer>,
): { readonly bytes: Buffer; readonly codes: readonly number[] } | undefined {
  const sql = settingsSql(want, have);
  if (!sql || sql.includes(DO_TAG)) return undefined;
  const body = Buffer.concat([Buffer.from(`DO ${DO_TAG}BEGIN `), sql, Buffer.from(` END${DO_TAG}`)]);
  const messages: Array<[number, Buffer]> = [
    [Frontend.Parse, frontendMessage(Frontend.Parse, SETTINGS_NAME, body, Buffer.alloc(3))],
    [Frontend.Bind, frontendMessage(Frontend.Bind, SETTINGS_NAME, SETTINGS_NAME, Buffer.alloc(6))],
    [Frontend.Execute, frontendMessage(Frontend.Execute, SETTINGS_NAME, Buffer.alloc(4))],
    [Frontend.Close, frontendMessage(Frontend.Close, Buffer.of(0x50), SETTINGS_NAME)],
    [Frontend.Close, frontendMessage(Frontend.Close, Buffer.of(0x53), SETTINGS_NAME)],
    [Frontend.Sync, frontendMessage(Frontend.Sync)],
  ];
  return { bytes: Buffer.concat(messages.map(([, m]) => m)), codes: messages.map(([code]) => code) };
}

/** A dollar-quote tag that does not occur in `value`. */
function dollarTag(value: Buffer): string {
  for (let n = 0; ; n++) {
    const tag = n === 0 ? '$p$' : `$p${n}$`;
    if (!value.includes(tag)) return tag;
  }
}

/**
 * The pool a client belongs to (its DB user, database, protocol version and keyed parameters), the
 * startup a server of that pool is opened with (none of the tracked parameters), and the client's own
 * tracked values. `user`: the DB user (the startup's, or --db-user's in its place).
 */
export function poolKeyOf(packet: StartupMessage, user: string): PoolKey {
  const { keyed, tracked } = splitStartup(packet.params);
  const userBytes = Buffer.from(user, 'utf8');
  checkUser(userBytes);
  const database = packet.params.find((p) => p.name === 'database');
  const params = [{ name: 'user', value: userBytes }, ...(database ? [database] : []), ...keyed];
  let id = `${packet.version}\0${user}\0${packet.database}`;
  for (const p of keyed) id += `\0${p.name}=${p.value.toString('base64')}`;
  return { id, user, database: packet.database, startup: startupMessage(packet.version, params), params: tracked };
}
