// The differential harness for pooling: clients run random sequences drawn from a grammar of the protocol
// through a pool, and every message each client receives must be, byte for byte, what the same client's
// sequence gets on a direct connection to the same database. The direct runs set the expectation; nothing
// here predicts PostgreSQL's answers.
//
// How a client knows a step is answered without a model of the server: after each step it sends a fence,
// Close of the statement "fence" and of the portal "fence" twice each, then Sync. PostgreSQL answers a
// Close of a name that does not exist with CloseComplete, in any transaction state, and a Close touches
// nothing else (a simple Query would drop the unnamed statement), so four CloseCompletes and a
// ReadyForQuery end the step. The grammar never closes four names in a row before a Sync, so nothing else
// looks like it (and were it to, direct and proxied streams would be cut the same way). Every step ends
// where a Close is read as such (after a Sync, a finished COPY, or a Query). The Flush step waits in the
// middle: its head has a fixed shape ([Parse] Bind [Describe] Execute Flush), whose answer ends at the
// Execute's answer or the first error; its rest ends with a Sync and the fence.
import fc from 'fast-check';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { startProxy, type TestProxy } from './proxy.js';
import { firstDifference, PgConn, show, type Msg } from './pgwire.js';
import type { TestDb } from './testdb.js';
import type { PoolMode, PoolSettings } from '../../src/pool/pool.js';

/** The user every differential client is (directly and through the proxy): trust login, so runs are cheap. */
export const DIFF_USER = 'trust_user';
export const DIFF_DATABASE = 'orders';
export const MAX_CLIENTS = 8;
/** Client i's own table: no two clients share mutable state. */
export const table = (i: number) => `diff_t${i}`;

// ---------------------------------------------------------------------------------------------------------
// The grammar.

interface Sql {
  text: string;
  /** Parameters the statement takes ($1 only). */
  params: 0 | 1;
  /** SHOW of the setting setters change: only clients that never SET it may look. */
  show?: true;
}

/** Statements a step may run ({t}: the client's table); none is COPY (COPY has its own steps). */
export const SQL: readonly Sql[] = [
  { text: 'SELECT n, s FROM {t} ORDER BY n, s', params: 0 }, // n repeats (INSERT): s breaks the tie
  { text: "INSERT INTO {t} VALUES ($1::int, 'x') RETURNING n", params: 1 },
  { text: 'SELECT $1::int + 1 AS v', params: 1 },
  { text: 'SELECT generate_series(1, 3) AS g', params: 0 },
  { text: 'SELECT 1/0 AS boom', params: 0 },
  { text: 'SELEC 1', params: 0 },
  { text: 'BEGIN', params: 0 },
  { text: 'COMMIT', params: 0 },
  { text: 'ROLLBACK', params: 0 },
  { text: "UPDATE {t} SET s = s || '!' WHERE n <= $1::int", params: 1 },
  { text: 'DELETE FROM {t} WHERE n > $1::int', params: 1 },
  { text: 'SELECT pg_sleep(0.02) IS NULL AS slept', params: 0 },
  { text: "SELECT repeat('x', 70000) AS big", params: 0 },
  { text: 'DEALLOCATE ALL', params: 0 },
  { text: 'DISCARD ALL', params: 0 },
  { text: 'DEALLOCATE s1', params: 0 },
  { text: 'DEALLOCATE PREPARE s2', params: 0 },
  { text: 'SHOW extra_float_digits', params: 0, show: true },
  { text: 'SAVEPOINT sp', params: 0 },
  { text: 'ROLLBACK TO SAVEPOINT sp', params: 0 },
  { text: 'SELECT count(*) AS c FROM {t}', params: 0 },
  { text: 'SELECT $1::text AS echo', params: 1 },
];

const STATEMENTS = ['', 's1', 's2'] as const;
const PORTALS = ['', 'p1'] as const;
const SQL_NAMES = ['q1', 'q2', 'q3'] as const;

export type Op =
  | { op: 'P'; name: string; sql: number }
  | { op: 'B'; portal: string; stmt: string; params: number; value: number }
  | { op: 'D'; kind: 'S' | 'P'; name: string }
  | { op: 'E'; portal: string; rows: number }
  | { op: 'C'; kind: 'S' | 'P'; name: string }
  | { op: 'S' }
  | { op: 'H' };

export type Step =
  /** One simple Query of one or more statements. */
  | { k: 'simple'; sqls: number[]; value: number }
  /** An extended pipeline (a Sync is added at the end when missing). */
  | { k: 'ext'; ops: Op[] }
  /** [Parse] Bind [Describe] Execute Flush, the answer awaited, then `rest` and a Sync. */
  | { k: 'flush'; parse: boolean; sql: number; stmt: string; portal: string; describe: boolean; value: number; rest: Op[] }
  /** COPY FROM STDIN: simple or extended (libpq's PQexecParams: a Sync with the Execute, another after CopyDone). */
  | {
      k: 'copyIn';
      proto: 'simple' | 'ext';
      rows: number[];
      /** Another 3,000 rows in one CopyData: the server takes a while over them. */
      bulk: boolean;
      end: 'done' | 'fail' | 'bad';
      syncFirst: boolean;
      /** After CopyInResponse: nothing (all in one write), the data (libpq), or only the next query (the fence). */
      waitG: 'no' | 'data' | 'fence';
    }
  | { k: 'copyOut'; proto: 'simple' | 'ext' }
  /** SQL PREPARE / EXECUTE [/ DEALLOCATE] in one Query. */
  | { k: 'sqlPrepare'; name: number; value: number; deallocate: boolean }
  /** SET extra_float_digits and SHOW it in one Query: the setting stays on the server (a leak to others if kept). */
  | { k: 'set'; value: number }
  /** A cursor WITH HOLD declared, fetched from and left open (or closed) in one Query. */
  | { k: 'cursor'; close: boolean }
  /** Frontend messages written as they are (the named tests' scripts); the fence follows. */
  | { k: 'raw'; parts: Array<{ text: string; bytes: Buffer }> };

export interface Client {
  steps: Step[];
  /** Per step: split its bytes into two writes at this fraction (undefined: one write). */
  split: Array<number | undefined>;
  /** Per step: the fence in the same write as the step (else a write of its own). */
  fenceTogether: boolean[];
  /** The client goes away during its last step: after this fraction of its bytes, by destroy or by FIN. */
  vanish?: { cut: number; how: 'destroy' | 'end' };
}

export interface Scenario {
  mode: PoolMode;
  size: 1 | 2;
  clients: Client[];
}

const sqlIndex = fc.integer({ min: 0, max: SQL.length - 1 });
const value = fc.integer({ min: 0, max: 6 });
const stmt = fc.constantFrom(...STATEMENTS);
const portal = fc.constantFrom(...PORTALS);

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('P' as const), name: stmt, sql: sqlIndex }) },
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant('B' as const), portal, stmt, params: fc.integer({ min: 0, max: 1 }), value }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('D' as const), kind: fc.constantFrom('S' as const, 'P' as const), name: stmt }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('E' as const), portal, rows: fc.constantFrom(0, 0, 1, 2) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('C' as const), kind: fc.constantFrom('S' as const, 'P' as const), name: stmt }) },
  { weight: 1, arbitrary: fc.constant({ op: 'S' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'H' as const }) },
);

/** Parse, Bind, [Describe,] Execute of one statement: the shape drivers send, so pipelines mostly make sense. */
const run: fc.Arbitrary<Op[]> = fc
  .record({ name: stmt, portal, sql: sqlIndex, value, describe: fc.boolean(), rows: fc.constantFrom(0, 0, 0, 1), parse: fc.boolean() })
  .map(({ name, portal, sql, value, describe, rows, parse }) => [
    ...(parse || name === '' ? [{ op: 'P' as const, name, sql }] : []),
    { op: 'B' as const, portal, stmt: name, params: SQL[sql]!.params, value },
    ...(describe ? [{ op: 'D' as const, kind: 'P' as const, name: portal }] : []),
    { op: 'E' as const, portal, rows },
  ]);

const ops = fc
  .array(fc.oneof({ weight: 3, arbitrary: run }, { weight: 2, arbitrary: op.map((o) => [o]) }), { minLength: 1, maxLength: 5 })
  .map((l) => l.flat());

export const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ k: fc.constant('simple' as const), sqls: fc.array(sqlIndex, { minLength: 1, maxLength: 3 }), value }),
  },
  { weight: 6, arbitrary: fc.record({ k: fc.constant('ext' as const), ops }) },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('flush' as const),
      parse: fc.boolean(),
      sql: sqlIndex,
      stmt,
      portal,
      describe: fc.boolean(),
      value,
      rest: fc.array(op, { maxLength: 3 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('copyIn' as const),
      proto: fc.constantFrom('simple' as const, 'ext' as const),
      rows: fc.array(fc.integer({ min: 10, max: 99 }), { maxLength: 3 }),
      bulk: fc.boolean(),
      end: fc.constantFrom('done' as const, 'done' as const, 'fail' as const, 'bad' as const),
      syncFirst: fc.boolean(),
      waitG: fc.constantFrom('no' as const, 'data' as const, 'fence' as const),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('copyOut' as const), proto: fc.constantFrom('simple' as const, 'ext' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('sqlPrepare' as const),
      name: fc.integer({ min: 0, max: SQL_NAMES.length - 1 }),
      value,
      deallocate: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('set' as const), value: fc.integer({ min: -2, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('cursor' as const), close: fc.boolean() }) },
);

/** Built from one array of steps with their write options (not a chain: fast-check shrinks those poorly). */
const client = (maxSteps: number): fc.Arbitrary<Client> =>
  fc
    .record({
      items: fc.array(
        fc.record({
          step,
          split: fc.oneof(
            { weight: 3, arbitrary: fc.constant(undefined) },
            { weight: 1, arbitrary: fc.double({ min: 0, max: 1, noNaN: true }) },
          ),
          fenceTogether: fc.boolean(),
        }),
        { minLength: 1, maxLength: maxSteps },
      ),
      // Most clients stay to the end: one that vanishes ends its sequence early.
      vanish: fc.oneof(
        { weight: 4, arbitrary: fc.constant(undefined) },
        {
          weight: 1,
          arbitrary: fc.record({
            cut: fc.double({ min: 0, max: 1, noNaN: true }),
            how: fc.constantFrom('destroy' as const, 'end' as const),
          }),
        },
      ),
    })
    .map(({ items, vanish }) => ({
      steps: items.map((x) => x.step),
      split: items.map((x) => x.split),
      fenceTogether: items.map((x) => x.fenceTogether),
      ...(vanish ? { vanish } : {}),
    }));

export function scenario(opts: { modes?: PoolMode[]; maxSteps?: number } = {}): fc.Arbitrary<Scenario> {
  return fc.record({
    mode: fc.constantFrom(...(opts.modes ?? (['transaction', 'session'] as PoolMode[]))),
    size: fc.constantFrom(1 as const, 2 as const),
    clients: fc.array(client(opts.maxSteps ?? 6), { minLength: 2, maxLength: MAX_CLIENTS }),
  });
}

// ---------------------------------------------------------------------------------------------------------
// From a step to bytes. A few rules keep each client's answers its own business and deterministic alone:
// - a named Parse is preceded by a Close of that name (a Parse over a live name is refused differently by
//   pgbouncer-style poolers, on purpose);
// - a client that SETs extra_float_digits never looks at it otherwise (in transaction mode its own SET of
//   a setting the server does not report lasts until its transaction ends, as the README says), not even
//   through a statement prepared before the SET; clients that never set it look at it freely: they must
//   see the default;
// - an SQL prepared statement or WITH HOLD cursor a client leaves behind is never used by that client again
//   (it lives on one server); other clients use the same names and must not find them.

export interface Planned {
  /** One line per message, for reports. */
  text: string[];
  bytes: Buffer;
  /** How the step's answer ends: after the fence, or (Flush step) at the Execute's answer. */
  wait: 'fence' | 'flush';
  /** COPY steps written in two parts (libpq waits for CopyInResponse before its data): the second part. */
  after?: Buffer;
  afterText?: string[];
}

interface ClientState {
  setter: boolean;
  burned: Set<string>;
  /**
   * The unnamed statement may be a COPY FROM STDIN (an extended COPY step made it): a Bind of it would start
   * a COPY nobody feeds, and the client would wait forever. Until a simple Query drops it, each Bind of
   * the unnamed statement gets a Parse of its own first.
   */
  unnamedCopy: boolean;
  /**
   * A simple Query ran since the unnamed portal was last closed. PostgreSQL 15.18 crashes (a segfault,
   * which restarts every session of the server) on an `Execute("")` of the portal a simple Query left when
   * its statement failed while running inside a transaction block (`BEGIN; DEALLOCATE s1` with no s1; a
   * statement refused before it runs, as `SELECT 1/0` is at planning, leaves none): that portal outlives
   * the memory its statement was in. Any client does that on a direct connection as well, so it says nothing of the proxy.
   * A Bind of the unnamed portal in between does not prevent it (the Bind may fail, and leave the portal),
   * so the first step after such a Query that executes the unnamed portal starts with a Close of it, which
   * nothing before it in its pipeline can skip (docs/architecture.md).
   */
  portalAfterQuery: boolean;
}

const frontend = (o: Op, table: string): { text: string; bytes: Buffer } => {
  switch (o.op) {
    case 'P': {
      // A DEALLOCATE or DISCARD prepared under a name acts on the server's names, which are the proxy's in
      // transaction pooling (README, Transaction mode): named, the grammar prepares another statement.
      const sql = o.name !== '' && /^(DEALLOCATE|DISCARD)\b/.test(SQL[o.sql]!.text) ? SQL[3]! : SQL[o.sql]!;
      const text = sql.text.replaceAll('{t}', table);
      return { text: `Parse(${JSON.stringify(o.name)}, ${JSON.stringify(text)})`, bytes: serialize.parse({ name: o.name, text }) };
    }
    case 'B': {
      const values = o.params === 1 ? [String(o.value)] : [];
      return {
        text: `Bind(${JSON.stringify(o.portal)}, ${JSON.stringify(o.stmt)}, [${values.join(',')}])`,
        bytes: serialize.bind({ portal: o.portal, statement: o.stmt, values }),
      };
    }
    case 'D':
      return { text: `Describe(${o.kind}, ${JSON.stringify(o.name)})`, bytes: serialize.describe({ type: o.kind, name: o.name }) };
    case 'E':
      return { text: `Execute(${JSON.stringify(o.portal)}, ${o.rows})`, bytes: serialize.execute({ portal: o.portal, rows: o.rows }) };
    case 'C':
      return { text: `Close(${o.kind}, ${JSON.stringify(o.name)})`, bytes: serialize.close({ type: o.kind, name: o.name }) };
    case 'S':
      return { text: 'Sync', bytes: serialize.sync() };
    case 'H':
      return { text: 'Flush', bytes: serialize.flush() };
  }
};

const q = (sql: string) => ({ text: `Query(${JSON.stringify(sql)})`, bytes: serialize.query(sql) });

function fixSql(i: number, state: ClientState): number {
  return SQL[i]!.show && state.setter ? 20 : i;
}

function fixOps(list: Op[], state: ClientState): Op[] {
  const out: Op[] = [];
  for (const o of list) {
    if (o.op === 'B' && o.stmt === '' && state.unnamedCopy) out.push({ op: 'P', name: '', sql: 0 }, o);
    else if (o.op === 'P') {
      const fixed = { ...o, sql: fixSql(o.sql, state) };
      if (o.name !== '') out.push({ op: 'C', kind: 'S', name: o.name });
      out.push(fixed);
    } else out.push(o);
  }
  return out;
}

/** A Close of the unnamed portal to start a step that executes it, after a simple Query (ClientState.portalAfterQuery). */
function closeFailedPortal(state: ClientState, ops: Op[]): Op[] {
  if (!state.portalAfterQuery || !ops.some((o) => o.op === 'E' && o.portal === '')) return [];
  state.portalAfterQuery = false;
  return [{ op: 'C', kind: 'P', name: '' }];
}

function simpleText(i: number, v: number, t: string): string {
  return SQL[i]!.text.replaceAll('{t}', t).replaceAll('$1', String(v));
}

export function plan(c: Client, index: number): Planned[] {
  const t = table(index);
  // A client that SETs anywhere never looks, not even through a statement it prepared before the SET.
  const state: ClientState = { setter: c.steps.some((s) => s.k === 'set'), burned: new Set(), unnamedCopy: false, portalAfterQuery: false };
  return c.steps.map((s): Planned => {
    const parts: Array<{ text: string; bytes: Buffer }> = [];
    let wait: Planned['wait'] = 'fence';
    let after: Array<{ text: string; bytes: Buffer }> | undefined;
    // A simple Query drops the unnamed statement (each of these steps is one).
    const simpleQuery =
      s.k === 'simple' ||
      s.k === 'sqlPrepare' ||
      s.k === 'set' ||
      s.k === 'cursor' ||
      ((s.k === 'copyIn' || s.k === 'copyOut') && s.proto === 'simple');
    if (simpleQuery) {
      state.unnamedCopy = false;
      state.portalAfterQuery = true;
    }
    switch (s.k) {
      case 'simple':
        parts.push(q(s.sqls.map((i) => simpleText(fixSql(i, state), s.value, t)).join('; ')));
        break;
      case 'ext': {
        const list = fixOps([...closeFailedPortal(state, s.ops), ...s.ops], state);
        if (list.at(-1)?.op !== 'S') list.push({ op: 'S' });
        parts.push(...list.map((o) => frontend(o, t)));
        break;
      }
      case 'flush': {
        const sql = fixSql(s.sql, state);
        const head: Op[] = [
          ...closeFailedPortal(state, [...s.rest, ...(s.portal === '' ? [{ op: 'E' as const, portal: '', rows: 0 }] : [])]),
          ...(s.parse || s.stmt === '' ? fixOps([{ op: 'P', name: s.stmt, sql }], state) : []),
          { op: 'B', portal: s.portal, stmt: s.stmt, params: SQL[sql]!.params, value: s.value },
          ...(s.describe ? [{ op: 'D' as const, kind: 'P' as const, name: s.portal }] : []),
          { op: 'E', portal: s.portal, rows: 0 },
          { op: 'H' },
        ];
        parts.push(...head.map((o) => frontend(o, t)));
        wait = 'flush';
        const rest = fixOps(s.rest, state);
        if (rest.at(-1)?.op !== 'S') rest.push({ op: 'S' });
        after = rest.map((o) => frontend(o, t));
        break;
      }
      case 'copyIn': {
        const data = s.rows.map((n) => serialize.copyData(Buffer.from(`${n}\tc${n}\n`)));
        const bulk = Array.from({ length: 3_000 }, (_, n) => `${n + 100}\tbulk\n`).join('');
        if (s.bulk) data.push(serialize.copyData(Buffer.from(bulk)));
        if (s.end === 'bad') data.push(serialize.copyData(Buffer.from('oops\tbad\n')));
        const ending = s.end === 'fail' ? serialize.copyFail('client gave up') : serialize.copyDone();
        const dataText = [
          ...s.rows.map((n) => `CopyData("${n}\\tc${n}\\n")`),
          ...(s.bulk ? ['CopyData(3,000 rows)'] : []),
          ...(s.end === 'bad' ? ['CopyData("oops\\tbad\\n")'] : []),
        ];
        const endText = s.end === 'fail' ? 'CopyFail' : 'CopyDone';
        const copySql = `COPY ${t} FROM STDIN`;
        const tail = [...data.map((bytes, i) => ({ text: dataText[i]!, bytes })), { text: endText, bytes: ending }];
        if (s.proto === 'simple') {
          parts.push(q(copySql));
          if (s.waitG === 'data') after = tail;
          else parts.push(...tail);
          if (s.waitG === 'fence') after = [];
        } else {
          parts.push(
            { text: `Parse("", ${JSON.stringify(copySql)})`, bytes: serialize.parse({ name: '', text: copySql }) },
            frontend({ op: 'B', portal: '', stmt: '', params: 0, value: 0 }, t),
            frontend({ op: 'E', portal: '', rows: 0 }, t),
          );
          state.unnamedCopy = true;
          if (s.syncFirst) parts.push(frontend({ op: 'S' }, t));
          const rest = [...tail, frontend({ op: 'S' }, t)];
          if (s.waitG === 'data') after = rest;
          else parts.push(...rest);
          if (s.waitG === 'fence') after = [];
        }
        break;
      }
      case 'copyOut': {
        const sql = `COPY (SELECT n, s FROM ${t} ORDER BY n, s) TO STDOUT`;
        if (s.proto === 'simple') parts.push(q(sql));
        else
          parts.push(
            { text: `Parse("", ${JSON.stringify(sql)})`, bytes: serialize.parse({ text: sql }) },
            frontend({ op: 'B', portal: '', stmt: '', params: 0, value: 0 }, t),
            frontend({ op: 'E', portal: '', rows: 0 }, t),
            frontend({ op: 'S' }, t),
          );
        break;
      }
      case 'sqlPrepare': {
        let name: string | undefined;
        for (let i = 0; i < SQL_NAMES.length && name === undefined; i++) {
          const candidate = SQL_NAMES[(s.name + i) % SQL_NAMES.length]!;
          if (!state.burned.has(candidate)) name = candidate;
        }
        if (name === undefined) parts.push(q(`SELECT ${s.value} AS none_left`));
        else {
          parts.push(
            q(`PREPARE ${name} AS SELECT $1::int * 2 AS twice; EXECUTE ${name}(${s.value})${s.deallocate ? `; DEALLOCATE ${name}` : ''}`),
          );
          if (!s.deallocate) state.burned.add(name);
        }
        break;
      }
      case 'raw':
        parts.push(...s.parts);
        break;
      case 'set':
        parts.push(q(`SET extra_float_digits = ${s.value}; SHOW extra_float_digits`));
        break;
      case 'cursor':
        if (state.burned.has('cur')) parts.push(q('SELECT 0 AS no_cursor'));
        else {
          parts.push(
            q(
              `BEGIN; DECLARE cur CURSOR WITH HOLD FOR SELECT generate_series(1, 4) AS g; FETCH 2 FROM cur; COMMIT${s.close ? '; CLOSE cur' : ''}`,
            ),
          );
          if (!s.close) state.burned.add('cur');
        }
        break;
    }
    return {
      text: parts.map((p) => p.text),
      bytes: Buffer.concat(parts.map((p) => p.bytes)),
      wait,
      ...(after ? { after: Buffer.concat(after.map((p) => p.bytes)), afterText: after.map((p) => p.text) } : {}),
    };
  });
}

/** The scenario as the messages each client sends, for failure reports. */
export function describeScenario(s: Scenario): string {
  const lines = [`mode ${s.mode}, pool of ${s.size}, ${s.clients.length} clients`];
  s.clients.forEach((c, i) => {
    lines.push(
      `client ${i}${c.vanish ? ` (vanishes in its last step: ${c.vanish.how} after ${Math.round(c.vanish.cut * 100)}% of its bytes)` : ''}:`,
    );
    plan(c, i).forEach((p, j) => {
      const parts = [
        ...p.text,
        ...(p.wait === 'flush' ? ['(await answer)'] : []),
        ...(p.after && p.wait !== 'flush' ? ['(await CopyInResponse)'] : []),
        ...(p.afterText ?? []),
      ];
      lines.push(`  ${j}: ${parts.join(' ')}`);
    });
  });
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// Running.

export const FENCE = Buffer.concat([
  serialize.close({ type: 'S', name: 'fence' }),
  serialize.close({ type: 'P', name: 'fence' }),
  serialize.close({ type: 'S', name: 'fence' }),
  serialize.close({ type: 'P', name: 'fence' }),
  serialize.sync(),
]);
/** Whether `got` ends with the fence's answer. */
const fenced = (got: Msg[]) => got.length >= 5 && got.at(-1)!.code === 'Z' && got.slice(-5, -1).every((x) => x.code === '3');
const FLUSH_END = 'CIsE';

/** What one client saw: per step the messages (the vanishing step's are not compared), and how it ended. */
export interface Transcript {
  steps: Msg[][];
  end: 'done' | 'eof' | 'timeout' | 'closed' | 'hang' | 'gone';
  /** The step and how a wait stopped early, if one did. */
  stoppedAt?: { step: number; stop: string };
}

export async function runClient(
  conn: PgConn,
  c: Client,
  index: number,
  waitMs: number,
  onStuck?: () => void,
  done: (conn: PgConn) => Promise<void> = (conn) => conn.end(),
): Promise<Transcript> {
  const planned = plan(c, index);
  const out: Transcript = { steps: [], end: 'done' };
  for (let i = 0; i < planned.length; i++) {
    const p = planned[i]!;
    const last = i === planned.length - 1;
    if (last && c.vanish) {
      const cut = Math.floor(c.vanish.cut * p.bytes.length);
      if (cut > 0) await conn.write(p.bytes.subarray(0, cut));
      if (c.vanish.how === 'destroy') {
        conn.destroy();
        out.end = 'gone';
      } else {
        conn.socket.end();
        // The peer must close: what it sends first is not compared (how much of it came is a race).
        let stop: Msg | string;
        do stop = await conn.next(waitMs);
        while (typeof stop !== 'string');
        out.end = stop === 'eof' ? 'closed' : 'hang';
        if (out.end === 'hang') onStuck?.();
        conn.destroy();
      }
      return out;
    }
    const got: Msg[] = [];
    out.steps.push(got);
    const writeParts = async (bytes: Buffer, fenceNow: boolean) => {
      const at = c.split[i] === undefined ? bytes.length : Math.floor(c.split[i]! * bytes.length);
      const tail = fenceNow && c.fenceTogether[i] ? Buffer.concat([bytes.subarray(at), FENCE]) : bytes.subarray(at);
      if (at > 0) await conn.write(bytes.subarray(0, at));
      if (tail.length) await conn.write(tail);
      if (fenceNow && !c.fenceTogether[i]) await conn.write(FENCE);
    };
    const stopped = (stop: string) => {
      if (stop === 'timeout') onStuck?.();
      out.stoppedAt = { step: i, stop };
      out.end = stop === 'eof' ? 'eof' : 'timeout';
      conn.destroy();
      return out;
    };
    if (p.wait === 'flush') {
      await writeParts(p.bytes, false);
      const r = await conn.until(FLUSH_END, waitMs);
      got.push(...r.msgs);
      if (r.stop) return stopped(r.stop);
      await conn.write(Buffer.concat([p.after!, ...(c.fenceTogether[i] ? [FENCE] : [])]));
      if (!c.fenceTogether[i]) await conn.write(FENCE);
    } else if (p.after) {
      // libpq's way with COPY FROM STDIN: the data only once CopyInResponse (or an error) is in; or all of
      // it at once and the next query while the COPY runs.
      await writeParts(p.bytes, false);
      const r = await conn.until('GEZ', waitMs);
      got.push(...r.msgs);
      if (r.stop) return stopped(r.stop);
      await conn.write(Buffer.concat([p.after, FENCE]));
    } else await writeParts(p.bytes, true);
    // Up to the fence's answer.
    for (;;) {
      const m = await conn.next(waitMs);
      if (typeof m === 'string') return stopped(m);
      got.push(m);
      if (fenced(got)) break;
    }
  }
  await done(conn);
  return out;
}

export interface Harness {
  db: TestDb;
  /** A direct connection (as DIFF_USER) for resets and pg_stat_activity, opened again if it fails. */
  control: { query(sql: string, values?: unknown[]): Promise<pg.QueryResult> };
  waitMs: number;
  /** Direct connections back from a run, reset (DISCARD ALL): a login costs more than the run's steps. */
  idle: PgConn[];
  close(): Promise<void>;
}

/** Tables for every client, and the control connection. */
export async function harness(db: TestDb, waitMs = Number(process.env.PG_IAM_PROXY_DIFF_WAIT_MS ?? 3_000)): Promise<Harness> {
  const ddl = Array.from(
    { length: MAX_CLIENTS },
    (_, i) => `CREATE TABLE ${table(i)} (n int, s text); GRANT ALL ON ${table(i)} TO ${DIFF_USER}, iam_user;`,
  ).join('\n');
  await db.admin(`GRANT USAGE ON SCHEMA public TO ${DIFF_USER}; ${ddl}`, DIFF_DATABASE);
  // A failure of this connection is the harness's, not a difference the proxy made: it is said on stderr
  // (a long soak's log shows it) and the next query opens another.
  let client: pg.Client | undefined;
  const open = async (): Promise<pg.Client> => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: db.port,
      user: DIFF_USER,
      database: DIFF_DATABASE,
      ssl: { ca: db.caPem, servername: db.endpoint },
      application_name: 'diff-control',
    });
    c.on('error', (err) => {
      process.stderr.write(`harness: the control connection failed (${err.message}); the next query opens another\n`);
      if (client === c) client = undefined;
    });
    await c.connect();
    await c.query("SET lock_timeout = '10s'");
    return c;
  };
  client = await open();
  const control = { query: async (sql: string, values?: unknown[]) => (client ??= await open()).query(sql, values) };
  const idle: PgConn[] = [];
  return {
    db,
    control,
    waitMs,
    idle,
    close: async () => {
      await Promise.all(idle.splice(0).map((c) => c.end()));
      await client?.end();
    },
  };
}

/** Every client's table back to its three rows. */
export async function resetTables(h: Harness, clients = MAX_CLIENTS): Promise<void> {
  const sql = Array.from(
    { length: clients },
    (_, i) => `DELETE FROM ${table(i)}; INSERT INTO ${table(i)} VALUES (1, 'a'), (2, 'b'), (3, 'c');`,
  ).join(' ');
  await h.control.query(sql);
}

/** Backends of DIFF_USER doing anything (but the control connection): none once every client is done. */
async function busyBackends(h: Harness): Promise<string[]> {
  const r = await h.control.query(
    `SELECT state, left(query, 60) AS query FROM pg_stat_activity
      WHERE usename = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'`,
    [DIFF_USER],
  );
  return r.rows.map((row: { state: string; query: string }) => `${row.state}: ${row.query}`);
}

/** Polls (bounded) until no backend of the test user is busy; what is still busy at the end. */
export async function settle(h: Harness, ms = 5_000): Promise<string[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const busy = await busyBackends(h);
    if (busy.length === 0 || Date.now() > deadline) return busy;
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const pooling = (mode: PoolMode, size: number): PoolSettings => ({
  mode,
  size,
  maxServers: undefined,
  waitTimeoutMs: 60_000,
  idleTimeoutMs: 600_000,
  lifetimeMs: 3_600_000,
  resetQuery: 'DISCARD ALL',
  maxPreparedStatements: 200,
});

/**
 * Every client's startup parameters: the same for all (a pool is per user and startup packet, so clients
 * that differ in application_name would never share a server). The arguments only name the caller.
 */
export const params = (_i: number, _via: string) => ({ user: DIFF_USER, database: DIFF_DATABASE, application_name: 'diff' });

/** Each client alone (at the same time: nothing is shared) on its own direct connection. */
export async function directRun(h: Harness, s: Scenario): Promise<Transcript[]> {
  await resetTables(h, s.clients.length);
  // A client that ran to its end leaves its connection as new: out of any transaction, and DISCARD ALL
  // (settings, prepared statements, cursors; a simple Query drops the unnamed statement too).
  const recycle = async (conn: PgConn) => {
    const back = await conn.query('ROLLBACK; DISCARD ALL', h.waitMs);
    if (!back.stop && back.msgs.at(-1)?.code === 'Z' && back.msgs.every((x) => x.code !== 'E')) h.idle.push(conn);
    else await conn.end();
  };
  const out = await Promise.all(
    s.clients.map(async (c, i) =>
      runClient(h.idle.pop() ?? (await PgConn.direct(h.db, params(i, 'direct'))), c, i, h.waitMs, undefined, recycle),
    ),
  );
  const busy = await settle(h);
  if (busy.length) throw new Error(`direct backends still busy after the run: ${busy.join('; ')}`);
  out.forEach((tr, i) => {
    if (tr.stoppedAt)
      throw new Error(
        `the grammar made client ${i} wait forever directly (step ${tr.stoppedAt.step}): fix the grammar\n--- scenario ---\n${describeScenario(s)}`,
      );
  });
  return out;
}

export interface Verdict {
  ok: boolean;
  problems: string[];
  /** What each client received through the proxy. */
  transcripts: Transcript[];
}

/** The scenario through a fresh proxy; every difference from `expected`, and what the pool was left with. */
export async function proxiedRun(h: Harness, s: Scenario, expected: Transcript[]): Promise<Verdict> {
  await resetTables(h, s.clients.length);
  const proxy: TestProxy = await startProxy(h.db, { pool: pooling(s.mode, s.size) });
  const problems: string[] = [];
  let got: Transcript[] = [];
  try {
    // Once one client is stuck the run has failed: the others stop waiting too (shrinking stays fast).
    const conns: PgConn[] = [];
    const stuck = () => {
      for (const conn of conns) conn.abort();
    };
    // A login waiting in the queue waits as long as other clients still get answers.
    let heard = Date.now();
    const progress = () => {
      heard = Date.now();
    };
    const othersMoving = () => Date.now() - heard < h.waitMs;
    got = await Promise.all(
      s.clients.map(async (c, i) => {
        const conn = PgConn.open(proxy.port);
        conn.heard = progress;
        conns.push(conn);
        try {
          // In session mode a login waits for a server: as long as the clients before it take.
          await conn.start(params(i, 'proxy'), h.waitMs, othersMoving);
        } catch (err) {
          stuck();
          conn.destroy();
          return { steps: [], end: 'eof', stoppedAt: { step: -1, stop: String(err) } } as Transcript;
        }
        return runClient(conn, c, i, h.waitMs, stuck);
      }),
    );
    problems.push(...compare(expected, got));
    // Every client is gone: no server may still work for one, the pool lends nothing, the next client is served.
    // (Not asked when a client already failed: the run has failed, and these waits would slow shrinking.)
    if (problems.length > 0) return { ok: false, problems, transcripts: got };
    const busy = await settle(h);
    if (busy.length) problems.push(`servers still busy after every client left: ${busy.join('; ')}`);
    const pool = await poolIdle(proxy);
    if (pool) problems.push(`the pool still lends: ${pool}`);
    const next = await nextClient(proxy, h.waitMs);
    if (next) problems.push(`a new client afterwards: ${next}`);
  } finally {
    await proxy.close(200);
  }
  return { ok: problems.length === 0, problems, transcripts: got };
}

async function poolIdle(proxy: TestProxy, ms = 3_000): Promise<string | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const snap = proxy.proxy.instances[0]!.pools?.snapshot() ?? [];
    const busy = snap.filter((p) => p.servers.active > 0 || p.clients.active > 0 || p.clients.waiting > 0);
    if (busy.length === 0) return undefined;
    if (Date.now() > deadline) return JSON.stringify(busy);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function nextClient(proxy: TestProxy, waitMs: number): Promise<string | undefined> {
  let conn: PgConn | undefined;
  try {
    conn = await PgConn.proxy(proxy.port, params(99, 'proxy'), waitMs);
    const r = await conn.query('SELECT 1 AS one', waitMs);
    const codes = r.msgs.map(show).join(' ');
    return codes === 'T(one) D(1) C(SELECT 1) Z(I)' ? undefined : `${codes}${r.stop ? ` then ${r.stop}` : ''}`;
  } catch (err) {
    return String(err);
  } finally {
    await conn?.end();
  }
}

/** Where two transcripts of the same clients differ (the harness's own check: two direct runs must agree). */
export function compare(want: Transcript[], got: Transcript[]): string[] {
  const problems: string[] = [];
  got.forEach((tr, i) => {
    const w = want[i]!;
    let failed = false;
    for (let j = 0; j < w.steps.length; j++) {
      const diff = firstDifference(w.steps[j]!, tr.steps[j] ?? [], failed);
      for (const x of w.steps[j]!) if (x.code === 'Z') failed = x.bytes[5] === 0x45;
      if (diff) {
        problems.push(`client ${i}, step ${j}: ${diff}${tr.stoppedAt?.step === j ? ` (then ${tr.stoppedAt.stop})` : ''}`);
        return;
      }
    }
    if (tr.end !== w.end) problems.push(`client ${i}: ended ${tr.end}, directly ${w.end}`);
  });
  return problems;
}

/** A named test's client: these steps in this order, each in one write with its fence. */
export const scripted = (...steps: Array<Array<{ text: string; bytes: Buffer }>>): Client => ({
  steps: steps.map((parts) => ({ k: 'raw', parts })),
  split: steps.map(() => undefined),
  fenceTogether: steps.map(() => true),
});

/** Frontend messages for scripts, each with the line a report shows. */
export const m = {
  query: (sql: string) => ({
    text: `Query(${JSON.stringify(sql.length > 80 ? `${sql.slice(0, 80)}…` : sql)})`,
    bytes: serialize.query(sql),
  }),
  parse: (name: string, sql: string) => ({
    text: `Parse(${JSON.stringify(name)}, ${JSON.stringify(sql.length > 80 ? `${sql.slice(0, 80)}…` : sql)})`,
    bytes: serialize.parse({ name, text: sql }),
  }),
  bind: (stmt: string, values: string[] = [], portal = '') => ({
    text: `Bind(${JSON.stringify(portal)}, ${JSON.stringify(stmt)}, [${values.join(',')}])`,
    bytes: serialize.bind({ portal, statement: stmt, values }),
  }),
  describe: (kind: 'S' | 'P', name = '') => ({
    text: `Describe(${kind}, ${JSON.stringify(name)})`,
    bytes: serialize.describe({ type: kind, name }),
  }),
  execute: (portal = '', rows = 0) => ({ text: `Execute(${JSON.stringify(portal)}, ${rows})`, bytes: serialize.execute({ portal, rows }) }),
  close: (kind: 'S' | 'P', name: string) => ({
    text: `Close(${kind}, ${JSON.stringify(name)})`,
    bytes: serialize.close({ type: kind, name }),
  }),
  sync: () => ({ text: 'Sync', bytes: serialize.sync() }),
  flush: () => ({ text: 'Flush', bytes: serialize.flush() }),
  copyData: (s: string) => ({ text: `CopyData(${JSON.stringify(s)})`, bytes: serialize.copyData(Buffer.from(s)) }),
  copyDone: () => ({ text: 'CopyDone', bytes: serialize.copyDone() }),
  copyFail: (why: string) => ({ text: 'CopyFail', bytes: serialize.copyFail(why) }),
};

/** One property run: direct, then proxied; throws with the whole story when they differ. */
export async function check(h: Harness, s: Scenario): Promise<void> {
  const expected = await directRun(h, s);
  const verdict = await proxiedRun(h, s, expected);
  if (!verdict.ok) throw new Error(`${verdict.problems.join('\n')}\n--- scenario ---\n${describeScenario(s)}`);
}

export interface PropertyOptions {
  modes: PoolMode[];
  /** Runs searched for a difference (at most). */
  runs: number;
  /** Time for the search, then for shrinking what it found (each at most). */
  searchSeconds: number;
  shrinkSeconds: number;
  maxSteps?: number;
  seed?: number;
  /** A counterexample path printed by an earlier failure: replays it (and shrinks on). */
  path?: string;
}

export interface PropertyResult {
  runs: number;
  seed: number;
  /** The shrunk difference (its problems, its scenario, and how to replay it), when one was found. */
  failure?: string;
}

/**
 * The property, searched then shrunk each in its own time (fast-check's own time limit would leave a
 * failure found late no time to shrink): the search ends at the first failure, then fast-check replays
 * its path and shrinks from there.
 */
export async function searchAndShrink(h: Harness, o: PropertyOptions): Promise<PropertyResult> {
  const seed = o.seed ?? Date.now() % 2 ** 31;
  const arb = scenario({ modes: o.modes, maxSteps: o.maxSteps });
  let runs = 0;
  const property = fc.asyncProperty(arb, async (s) => {
    runs++;
    await check(h, s);
  });
  let path = o.path;
  if (path === undefined) {
    const found = await fc.check(property, {
      numRuns: o.runs,
      seed,
      endOnFailure: true,
      interruptAfterTimeLimit: o.searchSeconds * 1000,
      markInterruptAsFailure: false,
    });
    if (!found.failed) return { runs, seed };
    path = found.counterexamplePath ?? undefined;
  }
  const shrunk = await fc.check(property, { seed, path, interruptAfterTimeLimit: o.shrinkSeconds * 1000, markInterruptAsFailure: false });
  if (!shrunk.failed) return { runs, seed, failure: `a difference at seed ${seed}, path ${path}, did not come again when replayed` };
  const error = shrunk.errorInstance instanceof Error ? shrunk.errorInstance.message : String(shrunk.errorInstance);
  return {
    runs,
    seed,
    failure:
      `${error}\n--- replay: PG_IAM_PROXY_DIFF_SEED=${seed} PG_IAM_PROXY_DIFF_PATH=${shrunk.counterexamplePath} ` +
      `(shrunk ${shrunk.numShrinks} times${shrunk.interrupted ? ', then out of time' : ''})`,
  };
}
