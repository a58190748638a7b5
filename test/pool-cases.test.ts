// Named cases of pooling gone wrong, each as the smallest script that shows it: answers that cross between
// clients, servers kept by clients that left, statements the proxy and the client disagree about, state
// carried to the next client. Where PostgreSQL's own answer is the expectation, the script runs directly
// too and every message must match byte for byte (test/support/differential.ts); where the proxy must do
// something a direct connection has no word for (a departed client's server closed, the next client served
// at once), that is asserted on pg_stat_activity and on the pool.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { connect } from 'node:net';
import { serialize } from 'pg-protocol';
import { startTestDb } from './support/testdb.js';
import { startProxy, type TestProxy } from './support/proxy.js';
import { startupBytes } from './support/bytes.js';
import { PgConn, firstDifference, show, type Msg } from './support/pgwire.js';
import { directRun, harness, m, params, pooling, proxiedRun, scripted, type Client, describeScenario } from './support/differential.js';
import type { PoolMode } from '../src/pool/pool.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const h = await harness(db);
t.teardown(() => h.close());
t.setTimeout(300_000);

/** The clients at once through a pool, each compared with itself alone on a direct connection. */
async function sameAsDirect(t: Test, mode: PoolMode, size: 1 | 2, clients: Client[], what: string): Promise<void> {
  const s = { mode, size, clients };
  const expected = await directRun(h, s);
  const verdict = await proxiedRun(h, s, expected);
  t.same(verdict.problems, [], what, { scenario: describeScenario(s) });
}

const pooled = (mode: PoolMode, size = 1) => startProxy(db, { pool: pooling(mode, size) });
const shown = (msgs: Msg[]) => msgs.map(show);
/** Short names for long scripted sequences. */
const { parse: P, bind: B, execute: E, sync: S, query: Q } = m;
/** Writes the messages, reads up to the next ReadyForQuery. */
async function ask(conn: PgConn, ...parts: Array<{ bytes: Buffer }>): Promise<Msg[]> {
  await conn.write(Buffer.concat(parts.map((p) => p.bytes)));
  const r = await conn.until('Z', 10_000);
  if (r.stop) throw new Error(`no ReadyForQuery (${r.stop}) after ${shown(r.msgs).join(' ')}`);
  return r.msgs;
}
/** The first column of the first row of a simple query. */
async function value(conn: PgConn, sql: string): Promise<string> {
  const row = (await ask(conn, m.query(sql))).find((x) => x.code === 'D');
  if (!row) throw new Error(`no row for ${sql}`);
  const len = row.bytes.readInt32BE(7);
  return row.bytes.subarray(11, 11 + len).toString('utf8');
}
/** What the same messages get on a fresh direct connection. */
async function direct(...steps: Array<Array<{ bytes: Buffer }>>): Promise<Msg[][]> {
  const conn = await PgConn.direct(db, params(0, 'direct'));
  const out: Msg[][] = [];
  for (const parts of steps) out.push(await ask(conn, ...parts));
  await conn.end();
  return out;
}
const sameMessages = (t: Test, want: Msg[], got: Msg[], what: string) => t.equal(firstDifference(want, got), undefined, what);

/** Polls (bounded) until `check` holds; whether it did. */
async function eventually(check: () => Promise<boolean> | boolean, ms = 3_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}
const activity = async (where: string): Promise<Array<{ pid: number; state: string; query: string }>> =>
  (await h.control.query(`SELECT pid, state, query FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ${where}`)).rows;
const backendGone = (pid: number) => eventually(async () => (await activity(`pid = ${pid}`)).length === 0);
const snapshot = (proxy: TestProxy) => proxy.proxy.instances[0]!.pools!.snapshot();
const poolQuiet = (proxy: TestProxy) =>
  eventually(() => snapshot(proxy).every((p) => p.servers.active === 0 && p.clients.active === 0 && p.clients.waiting === 0));
/** A new client through the proxy runs a query (the 5 s bound is far below what a held server would cost). */
async function served(t: Test, proxy: TestProxy, what: string): Promise<void> {
  const c = await PgConn.proxy(proxy.port, params(7, 'next'), 5_000);
  const r = await c.query('SELECT 1 AS one', 5_000);
  t.same(shown(r.msgs), ['T(one)', 'D(1)', 'C(SELECT 1)', 'Z(I)'], what);
  await c.end();
}

t.test('COPY FROM STDIN in one write with its Sync, then a query while it runs: no client gets another client’s rows', async (t) => {
  // A: Parse/Bind/Execute of the COPY, its data, CopyDone and Sync in one write; once CopyInResponse is in
  // (the server still busy with the rows), B asks for the server and A sends its next query.
  const rows = Array.from({ length: 5_000 }, (_, n) => `${n}\tfrom A\n`).join('');
  const batch = Buffer.concat(
    [m.parse('', 'COPY diff_t0 FROM STDIN'), m.bind(''), m.execute(), m.copyData(rows), m.copyDone(), m.sync()].map((x) => x.bytes),
  );
  const aQuery = m.query("SELECT 'A' AS who, count(*) AS n FROM diff_t0");
  const bQuery = m.query("SELECT 'B' AS who, n, s FROM diff_t1 ORDER BY n");
  /** Until the n-th ReadyForQuery. */
  const readyTimes = async (conn: PgConn, n: number, got: Msg[] = []) => {
    while (got.filter((x) => x.code === 'Z').length < n) {
      const next = await conn.next(5_000);
      if (typeof next === 'string') return [...got, { code: next, bytes: Buffer.from(next) }];
      got.push(next);
    }
    return got;
  };
  const script = async (a: PgConn, b: PgConn) => {
    await a.write(batch);
    const head = (await a.until('GE', 10_000)).msgs;
    await b.write(bQuery.bytes);
    await a.write(aQuery.bytes);
    return Promise.all([readyTimes(a, 2, head), readyTimes(b, 1)]);
  };
  for (let run = 0; run < 5; run++) {
    await h.control.query("DELETE FROM diff_t0; DELETE FROM diff_t1; INSERT INTO diff_t1 VALUES (1, 'b')");
    const [directA, directB] = [await PgConn.direct(db, params(0, 'a')), await PgConn.direct(db, params(1, 'b'))];
    const [wantA, wantB] = await script(directA, directB);
    await Promise.all([directA.end(), directB.end()]);
    await h.control.query("DELETE FROM diff_t0; DELETE FROM diff_t1; INSERT INTO diff_t1 VALUES (1, 'b')");
    await using proxy = await pooled('transaction', 1);
    const a = await PgConn.proxy(proxy.port, params(0, 'a'));
    const b = await PgConn.proxy(proxy.port, params(1, 'b'));
    const [gotA, gotB] = await script(a, b);
    sameMessages(t, wantA, gotA, `run ${run}: A gets its COPY's answer and its own query's`);
    sameMessages(t, wantB, gotB, `run ${run}: B gets its own rows`);
    a.destroy();
    b.destroy();
  }
  await sameAsDirect(
    t,
    'transaction',
    1,
    [
      // The grammar's step for it: the COPY with 3,000 rows in one write, the next request once CopyInResponse is in.
      {
        steps: [{ k: 'copyIn', proto: 'ext', rows: [1], bulk: true, end: 'done', syncFirst: false, waitG: 'fence' }],
        split: [undefined],
        fenceTogether: [true],
      },
      scripted([bQuery], [bQuery]),
      scripted([bQuery], [bQuery]),
    ],
    'the same through the harness',
  );
});

for (const mode of ['transaction', 'session'] as const) {
  t.test(
    `${mode}: a client that leaves mid-query (socket destroyed): its server is closed at once, the next client is served`,
    async (t) => {
      await using proxy = await pooled(mode);
      const a = await PgConn.proxy(proxy.port, params(0, 'leaver'));
      await a.write(serialize.query('SELECT pg_sleep(20)'));
      let pid = 0;
      t.ok(
        await eventually(
          async () => ((pid = (await activity("query = 'SELECT pg_sleep(20)' AND state = 'active'"))[0]?.pid ?? 0), pid > 0),
        ),
        'the query runs',
      );
      a.destroy();
      await served(t, proxy, 'the next client is served before the query would have ended');
      t.ok(await backendGone(pid), 'the backend of the departed client is gone');
      t.ok(await poolQuiet(proxy), 'nothing left active in the pool');
    },
  );

  t.test(`${mode}: a clean close (FIN) during COPY FROM STDIN: the backend is gone, the next client is served`, async (t) => {
    await using proxy = await pooled(mode);
    const a = await PgConn.proxy(proxy.port, params(0, 'fin-copy'));
    const pid = Number(await value(a, 'SELECT pg_backend_pid()'));
    await a.write(serialize.query('COPY diff_t0 FROM STDIN'));
    t.same(shown((await a.until('GE', 10_000)).msgs), ['G'], 'in COPY');
    await a.write(serialize.copyData(Buffer.from('5\thalf\n')));
    a.socket.end();
    t.ok(await eventually(() => a.ended), 'the proxy closes the client');
    t.ok(await backendGone(pid), 'the backend stuck in COPY is gone');
    await served(t, proxy, 'the next client is served');
    t.ok(await poolQuiet(proxy), 'nothing left active in the pool');
  });

  t.test(`${mode}: a clean close (FIN) after half a message inside a transaction: the backend is gone`, async (t) => {
    await using proxy = await pooled(mode);
    const a = await PgConn.proxy(proxy.port, params(0, 'fin-half'));
    await ask(a, m.query('BEGIN'));
    const pid = Number(await value(a, 'SELECT pg_backend_pid()'));
    const half = serialize.query('SELECT 1');
    await a.write(half.subarray(0, 7));
    a.socket.end();
    t.ok(await eventually(() => a.ended), 'the proxy closes the client');
    t.ok(await backendGone(pid), 'its server is closed');
    await served(t, proxy, 'the next client is served');
    t.ok(await poolQuiet(proxy), 'nothing left active in the pool');
  });

  t.test(`${mode}: a client that closes while queued for a server is dropped from the queue, its query never runs`, async (t) => {
    await using proxy = await pooled(mode);
    const holder = await PgConn.proxy(proxy.port, params(0, 'holder'));
    await ask(holder, m.query('BEGIN'));
    const queued =
      mode === 'session'
        ? // In session mode the login itself waits for the server: connect by hand.
          await (async () => {
            const s = connect({ host: '127.0.0.1', port: proxy.port });
            s.on('error', () => undefined);
            await once(s, 'connect');
            s.write(startupBytes(params(1, 'queued')));
            return { destroy: () => s.destroy() };
          })()
        : await PgConn.proxy(proxy.port, params(1, 'queued'));
    if (queued instanceof PgConn) await queued.write(serialize.query("INSERT INTO diff_t1 VALUES (42, 'queued')"));
    t.ok(await eventually(() => snapshot(proxy)[0]?.clients.waiting === 1), 'the client waits for the server');
    queued.destroy();
    t.ok(await eventually(() => snapshot(proxy)[0]?.clients.waiting === 0), 'and leaves the queue when it goes');
    await ask(holder, m.query('COMMIT'));
    await holder.end();
    await served(t, proxy, 'the next client is served');
    if (mode === 'transaction') {
      t.equal(
        (await h.control.query('SELECT count(*)::int AS c FROM diff_t1 WHERE n = 42')).rows[0].c,
        0,
        'the query of the departed client never ran',
      );
    }
    t.ok(await poolQuiet(proxy), 'nothing left active in the pool');
  });
}

t.test(
  "the client's own DEALLOCATE, DEALLOCATE ALL and DISCARD ALL, simple and extended, then the same names prepared again",
  async (t) => {
    const prepare = (name: string, sql: string) => [m.parse(name, sql), m.sync()];
    const use = (name: string) => [m.bind(name), m.execute(), m.sync()];
    const viaExtended = (sql: string) => [m.parse('', sql), m.bind(''), m.execute(), m.sync()];
    const cases: Array<[string, Client]> = [
      [
        'DEALLOCATE name (simple)',
        scripted(
          prepare('s1', 'SELECT 1 AS a'),
          [m.query('DEALLOCATE s1')],
          prepare('s1', 'SELECT 2 AS b'),
          use('s1'),
          [m.query('DEALLOCATE s1')],
          [m.query('DEALLOCATE s1')],
        ),
      ],
      [
        'DEALLOCATE name (extended)',
        scripted(
          prepare('s1', 'SELECT 1 AS a'),
          viaExtended('DEALLOCATE PREPARE s1'),
          prepare('s1', 'SELECT 2 AS b'),
          use('s1'),
          viaExtended('DEALLOCATE s1'),
          use('s1'),
        ),
      ],
      [
        'DEALLOCATE ALL (simple)',
        scripted(
          prepare('s1', 'SELECT 1 AS a'),
          prepare('s2', 'SELECT 2 AS b'),
          [m.query('DEALLOCATE ALL')],
          use('s1'),
          prepare('s1', 'SELECT 3 AS c'),
          prepare('s2', 'SELECT 4 AS d'),
          use('s1'),
          use('s2'),
        ),
      ],
      [
        'DEALLOCATE ALL (extended)',
        scripted(prepare('s1', 'SELECT 1 AS a'), viaExtended('DEALLOCATE ALL'), prepare('s1', 'SELECT 3 AS c'), use('s1')),
      ],
      [
        'DISCARD ALL (simple)',
        scripted(prepare('s1', 'SELECT 1 AS a'), [m.query('DISCARD ALL')], use('s1'), prepare('s1', 'SELECT 3 AS c'), use('s1')),
      ],
      [
        'DISCARD ALL (extended)',
        scripted(prepare('s1', 'SELECT 1 AS a'), viaExtended('DISCARD ALL'), prepare('s1', 'SELECT 3 AS c'), use('s1')),
      ],
      [
        "psycopg's DEALLOCATE ALL after a ROLLBACK, then its names again",
        scripted(
          [m.query('BEGIN')],
          prepare('_pg3_0', 'SELECT n FROM diff_t0 ORDER BY n'),
          use('_pg3_0'),
          [m.query('ROLLBACK')],
          [m.query('DEALLOCATE ALL')],
          prepare('_pg3_0', 'SELECT 5 AS e'),
          use('_pg3_0'),
        ),
      ],
      [
        'a name deallocated inside a transaction that rolls back stays deallocated (DEALLOCATE is not transactional)',
        scripted(
          prepare('s1', 'SELECT 1 AS a'),
          [m.query('BEGIN; DEALLOCATE s1; ROLLBACK')],
          use('s1'),
          prepare('s1', 'SELECT 6 AS f'),
          use('s1'),
        ),
      ],
    ];
    for (const [what, client] of cases) {
      for (const size of [1, 2] as const) await sameAsDirect(t, 'transaction', size, [client], `${what}, pool of ${size}`);
    }
    // Against a busy pool: another client takes servers in between.
    const busy = scripted([m.query('BEGIN')], [m.query('SELECT pg_sleep(0.05)')], [m.query('COMMIT')], [m.query('SELECT 1 AS x')]);
    for (const [what, client] of cases) await sameAsDirect(t, 'transaction', 2, [client, busy, busy], `${what}, with other clients`);
  },
);

t.test('the unnamed statement: Parse("") then Bind("") in later transactions, as PQprepare(conn, "") and PQexecPrepared do', async (t) => {
  const client = scripted(
    [m.parse('', 'SELECT $1::int * 3 AS x'), m.sync()],
    [m.bind('', ['7']), m.describe('P'), m.execute(), m.sync()],
    [m.describe('S', ''), m.sync()],
    [m.bind('', ['8']), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [client], 'one client, a pool of one');
  const other = scripted([m.query('BEGIN')], [m.query('SELECT pg_sleep(0.05)')], [m.query('COMMIT')]);
  await sameAsDirect(t, 'transaction', 2, [client, other], 'while another client takes a server');
  await sameAsDirect(t, 'transaction', 2, [client, other, other], 'while two other clients take servers');
});

t.test('pipelines with errors: what the server skipped, the proxy must not count as done', async (t) => {
  await sameAsDirect(
    t,
    'transaction',
    1,
    [
      scripted(
        [m.parse('k1', 'SELECT 1 AS k'), m.sync()],
        [m.parse('', 'SELEC 1'), m.close('S', 'k1'), m.sync()],
        [m.bind('k1'), m.execute(), m.sync()],
      ),
    ],
    'a Close of k1 skipped after an error: Bind k1 runs',
  );
  await sameAsDirect(
    t,
    'transaction',
    1,
    [scripted([m.bind('nope'), m.parse('m2', 'SELECT 2 AS m'), m.sync()], [m.bind('m2'), m.execute(), m.sync()])],
    'a Parse of m2 skipped after an error: Bind m2 says it does not exist',
  );
  await sameAsDirect(
    t,
    'transaction',
    1,
    [
      scripted([
        m.parse('', 'SELECT 1/0'),
        m.bind(''),
        m.execute(),
        m.parse('m3', 'SELECT 3 AS m'),
        m.sync(),
        m.parse('m3', 'SELECT 3 AS m'),
        m.bind('m3'),
        m.execute(),
        m.sync(),
      ]),
    ],
    'a Parse skipped after an error, parsed again in the same pipeline: it runs',
  );
  await sameAsDirect(
    t,
    'transaction',
    2,
    [
      scripted(
        [m.parse('k1', 'SELECT 1 AS k'), m.sync()],
        [m.parse('', 'SELECT 1/0'), m.bind(''), m.execute(), m.close('S', 'k1'), m.parse('k2', 'SELECT 2 AS k'), m.sync()],
        [m.bind('k1'), m.execute(), m.bind('k2'), m.execute(), m.sync()],
        [m.close('S', 'k1'), m.parse('k1', 'SELECT 11 AS k'), m.bind('k1'), m.execute(), m.sync()],
      ),
      scripted([m.query('BEGIN')], [m.query('SELECT 1')], [m.query('COMMIT')]),
    ],
    'the same across servers',
  );
});

t.test('a Parse in a failed transaction of a statement the server already has: refused (25P02) as PostgreSQL refuses it', async (t) => {
  // p1 leaves the statement prepared on the server; in a failed transaction the client parses the same
  // SQL under another name: PostgreSQL refuses the Parse itself (only COMMIT and ROLLBACK parse there),
  // and the proxy's own answer for a statement the server has must not say otherwise.
  const failed = scripted(
    [m.parse('p1', 'SELECT 41 + 1 AS answer'), m.sync()],
    [m.query('BEGIN')],
    [m.query('SELECT 1/0')],
    [m.parse('p2', 'SELECT 41 + 1 AS answer'), m.bind('p2'), m.execute(), m.sync()],
    [m.parse('r', 'ROLLBACK'), m.bind('r'), m.execute(), m.sync()],
    [m.parse('p2', 'SELECT 41 + 1 AS answer'), m.bind('p2'), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [failed], 'a failed transaction, then a ROLLBACK parsed in it, then the statement again');
  const pipelined = scripted(
    [m.parse('p1', 'SELECT 41 + 1 AS answer'), m.sync()],
    [m.query('BEGIN')],
    [m.bind('nope'), m.sync(), m.parse('p3', 'SELECT 41 + 1 AS answer'), m.bind('p3'), m.execute(), m.sync(), m.query('ROLLBACK')],
  );
  await sameAsDirect(t, 'transaction', 1, [pipelined], 'the transaction failing in a group still unanswered when the Parse is sent');
});

t.test(
  "the client's own DISCARD ALL, then its unnamed statement again: the proxy's query that sets its values back drops it, and it is parsed again",
  async (t) => {
    // DISCARD ALL takes the settings back; the proxy sets the client's values again with a Query of its own,
    // which drops the server's unnamed statement: the client's next Bind of it must still find it.
    const discards = scripted(
      [m.parse('', 'DISCARD ALL'), m.bind(''), m.execute(), m.flush(), m.sync()],
      [m.bind(''), m.sync()],
      [m.query('SELECT 1 AS x')],
    );
    const other = scripted([m.parse('', 'DEALLOCATE s1'), m.bind(''), m.execute('', 1), m.sync()]);
    for (let round = 0; round < 5; round++)
      await sameAsDirect(t, 'transaction', 1, [other, discards], `with another client, round ${round}`);
    const pipelined = scripted(
      [m.parse('', 'DISCARD ALL'), m.bind(''), m.execute(), m.sync(), m.parse('', 'SELECT 2 AS y'), m.bind(''), m.execute(), m.sync()],
      [m.bind(''), m.execute(), m.sync()],
    );
    await sameAsDirect(t, 'transaction', 1, [pipelined], 'an unnamed statement made in the same write after the DISCARD ALL');
  },
);

t.test(
  "session mode: the client's own DISCARD ALL, then its unnamed statement: setting its values again leaves the statement",
  async (t) => {
    const discards = scripted(
      [m.parse('', 'DISCARD ALL'), m.bind(''), m.execute(), m.bind(''), m.sync()],
      [m.describe('S', ''), m.parse('', 'SELECT 2 AS y'), m.bind(''), m.execute(), m.sync()],
      [m.query("SELECT current_setting('application_name') AS app")],
    );
    const other = scripted([m.query('SELECT 1 AS x')]);
    await sameAsDirect(t, 'session', 1, [discards, other], 'a pool of one, another client after');
    const pipelined = scripted([
      m.query('RESET application_name'),
      m.parse('', 'SELECT 3 AS z'),
      m.bind(''),
      m.execute(),
      m.sync(),
      m.bind(''),
      m.execute(),
      m.sync(),
    ]);
    await sameAsDirect(t, 'session', 1, [pipelined], 'a RESET with an unnamed statement made behind it in the same write');
  },
);

t.test('an unnamed DEALLOCATE ALL bound but not executed drops nothing: a Bind after it still finds the names', async (t) => {
  const client = scripted(
    [
      m.parse('', 'DEALLOCATE ALL'),
      m.bind(''),
      m.execute(),
      m.close('S', 's2'),
      m.parse('s2', 'SELECT 2 AS y'),
      m.bind('', [], ''),
      m.sync(),
    ],
    [m.bind(''), m.bind('s2'), m.execute(), m.sync()],
    [m.bind(''), m.execute(), m.bind('s2'), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [client], 'bound twice, executed once');
  await sameAsDirect(t, 'transaction', 1, [client, scripted([m.query('SELECT 1 AS x')])], 'with another client');
  // Only an Execute of the DEALLOCATE's own portal runs it: not once another Bind replaced that portal, not
  // an Execute of another portal, not after a Close of it.
  const sel = 'SELECT 2 AS y';
  const replaced = scripted(
    [m.parse('', 'DEALLOCATE ALL'), m.bind(''), m.execute(), m.sync()],
    [m.parse('s2', sel), m.bind('s2'), m.execute(), m.bind(''), m.parse('', sel), m.bind(''), m.execute(), m.sync()],
    [m.bind('s2'), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [replaced], 'the portal replaced by a Bind of another statement');
  const otherPortal = scripted(
    [m.parse('', 'DEALLOCATE ALL'), m.parse('s2', sel), m.sync()],
    [m.bind('s2', [], 'p1'), m.bind(''), m.execute('p1'), m.sync()],
    [m.bind('s2'), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [otherPortal], 'an Execute of another portal');
  const closed = scripted(
    [m.parse('', 'DEALLOCATE ALL'), m.parse('s2', sel), m.sync()],
    [m.bind(''), m.close('P', ''), m.execute(), m.sync()],
    [m.bind('s2'), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [closed], 'the portal closed before its Execute');
  // An error about a statement, answered after a DEALLOCATE ALL sent behind it dropped every name: in the
  // client's words still.
  const errorBehind = scripted(
    [m.parse('s2', 'SELECT $1::int AS v'), m.sync()],
    [m.bind('s2'), m.sync(), m.parse('', 'DEALLOCATE ALL'), m.bind(''), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [errorBehind], "a Bind's error answered after the names were dropped");
});

t.test('a Bind in a failed transaction on a server that lost the statement: the same error, found by the Parse sent first', async (t) => {
  // The reset after a WITH HOLD cursor drops the server's statements; in the failed transaction the
  // proxy's Parse is refused (25P02) where PostgreSQL refuses the client's Bind: same code and message,
  // another server routine (compared without the server's source location, test/support/pgwire.ts).
  const client = scripted(
    [m.parse('s2', 'SELECT 2 AS y'), m.sync()],
    [m.query('BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT')],
    [m.query('BEGIN')],
    [m.query('SELECT 1/0')],
    [m.bind('s2'), m.execute(), m.sync()],
    [m.query('ROLLBACK')],
    [m.bind('s2'), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [client], 'one client, a pool of one');
  // A SET resets the server after the transaction; a Bind with one parameter too many in the failed
  // transaction then gets 25P02 from the proxy's Parse, where PostgreSQL counts the parameters first
  // (08P01): refused either way, the one difference the README names and the comparison accepts.
  const wrongCount = scripted(
    [m.parse('s2', 'SELECT 1'), m.sync()],
    [m.query('SET extra_float_digits = 0')],
    [m.query('BEGIN'), m.query('SELECT 1/0')],
    [m.bind('s2', ['0']), m.execute(), m.sync()],
    [m.query('ROLLBACK')],
    [m.bind('s2'), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [wrongCount], 'a Bind with the wrong number of parameters');
  const s = { mode: 'transaction' as const, size: 1 as const, clients: [wrongCount] };
  const proxied = await proxiedRun(h, s, await directRun(h, s));
  t.match(shown(proxied.transcripts[0]!.steps[3]!), [
    'E(ERROR 25P02 current transaction is aborted, commands ignored until end of transaction block)',
    'Z(E)',
  ]);
});

t.test(
  "the client's own DISCARD ALL, then BEGIN in the same pipeline: its values are set again once the transaction is over",
  async (t) => {
    const client = scripted(
      [m.parse('', 'DISCARD ALL'), m.bind(''), m.execute(), m.parse('', 'BEGIN'), m.bind(''), m.execute(), m.sync()],
      [m.execute(), m.sync()],
      [m.query('ROLLBACK')],
      [m.query("SELECT current_setting('application_name') AS app")],
    );
    for (const mode of ['transaction', 'session'] as const) {
      await sameAsDirect(t, mode, 1, [client], `${mode} mode: the portal stays for the transaction, the values come back after it`);
    }
  },
);

t.test('a Parse over 16 MiB in transaction mode is accepted, as PostgreSQL accepts it', async (t) => {
  const big = `SELECT length('${'x'.repeat(17 * 1024 * 1024)}') AS len`;
  await sameAsDirect(
    t,
    'transaction',
    1,
    [scripted([m.parse('', big), m.bind(''), m.execute(), m.sync()], [m.query('SELECT 1 AS after')])],
    'unnamed',
  );
  await sameAsDirect(
    t,
    'transaction',
    1,
    [scripted([m.parse('big', big), m.sync()], [m.bind('big'), m.execute(), m.sync()])],
    'named, used later',
  );
});

t.test('session mode, COPY FROM STDIN over the extended protocol (PQexecParams): Terminate pools the server', async (t) => {
  await using proxy = await pooled('session');
  const a = await PgConn.proxy(proxy.port, params(0, 'copy-ext'));
  const pid = Number(await value(a, 'SELECT pg_backend_pid()'));
  await a.write(Buffer.concat([m.parse('', 'COPY diff_t0 FROM STDIN').bytes, m.bind('').bytes, m.execute().bytes, m.sync().bytes]));
  t.same(shown((await a.until('GE', 10_000)).msgs), ['1', '2', 'G']);
  t.same(shown(await ask(a, m.copyData('20\tx\n'), m.copyDone(), m.sync())), ['C(COPY 1)', 'Z(I)'], 'the Sync sent during COPY is ignored');
  await a.end();
  t.ok(await eventually(() => snapshot(proxy)[0]?.servers.idle === 1), 'the server is back in the pool');
  const b = await PgConn.proxy(proxy.port, params(1, 'copy-ext'));
  t.equal(Number(await value(b, 'SELECT pg_backend_pid()')), pid, 'and the next client gets it (not a new one)');
  await b.end();
});

t.test('session mode, COPY FROM STDIN over the extended protocol, then a half-close: the proxy does not hang', async (t) => {
  await using proxy = await pooled('session');
  const a = await PgConn.proxy(proxy.port, params(0, 'copy-ext-fin'));
  await a.write(Buffer.concat([m.parse('', 'COPY diff_t0 FROM STDIN').bytes, m.bind('').bytes, m.execute().bytes, m.sync().bytes]));
  t.same(shown((await a.until('GE', 10_000)).msgs), ['1', '2', 'G']);
  t.same(shown(await ask(a, m.copyData('21\tx\n'), m.copyDone(), m.sync())), ['C(COPY 1)', 'Z(I)']);
  a.socket.end();
  t.ok(await eventually(() => a.ended), 'the proxy closes the client after its FIN');
  t.ok(await poolQuiet(proxy), 'nothing left active in the pool');
  await served(t, proxy, 'the next client is served');
});

t.test('transaction mode: a cursor WITH HOLD and SQL PREPARE stay with their client, never reach the next one', async (t) => {
  await using proxy = await pooled('transaction');
  const a = await PgConn.proxy(proxy.port, params(0, 'leaves-state'));
  const b = await PgConn.proxy(proxy.port, params(1, 'finds-state'));
  await ask(a, m.query('BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT generate_series(1, 3) AS g; COMMIT'));
  let want = await direct([m.query('FETCH ALL FROM held')]);
  sameMessages(t, want[0]!, await ask(b, m.query('FETCH ALL FROM held')), "another client's cursor does not exist here");
  await ask(a, m.query('PREPARE sqlp AS SELECT 8 AS eight'));
  want = await direct([m.query('EXECUTE sqlp')]);
  sameMessages(t, want[0]!, await ask(b, m.query('EXECUTE sqlp')), "another client's SQL statement does not exist here");
  await ask(a, m.parse('', 'PREPARE sqlx AS SELECT 9 AS nine'), m.bind(''), m.execute(), m.sync());
  want = await direct([m.query('EXECUTE sqlx')]);
  sameMessages(t, want[0]!, await ask(b, m.query('EXECUTE sqlx')), 'nor one prepared through the extended protocol');
  want = await direct([m.query('PREPARE sqlp AS SELECT 10 AS ten; EXECUTE sqlp')]);
  sameMessages(t, want[0]!, await ask(b, m.query('PREPARE sqlp AS SELECT 10 AS ten; EXECUTE sqlp')), 'the name is free for it');
  await a.end();
  await b.end();
});

t.test('a Bind naming a proxy statement that is gone (DEALLOCATE ALL inside a DO block): one error, then the pool heals', async (t) => {
  await using proxy = await pooled('transaction');
  const a = await PgConn.proxy(proxy.port, params(0, 'heal-a'));
  const b = await PgConn.proxy(proxy.port, params(1, 'heal-b'));
  const use = (conn: PgConn) => ask(conn, m.bind('s1'), m.execute(), m.sync());
  t.same(shown(await ask(a, m.parse('s1', 'SELECT 81 AS v'), m.bind('s1'), m.execute(), m.sync())), [
    '1',
    '2',
    'D(81)',
    'C(SELECT 1)',
    'Z(I)',
  ]);
  t.same(shown(await ask(b, m.parse('s1', 'SELECT 82 AS v'), m.bind('s1'), m.execute(), m.sync())), [
    '1',
    '2',
    'D(82)',
    'C(SELECT 1)',
    'Z(I)',
  ]);
  await ask(a, m.query("DO $$BEGIN EXECUTE 'DEALLOCATE ALL'; END$$"));
  const first = shown(await use(a));
  t.ok(
    JSON.stringify(first) === JSON.stringify(['2', 'D(81)', 'C(SELECT 1)', 'Z(I)']) ||
      (first[0]?.startsWith('E(ERROR 26000') && first.at(-1) === 'Z(I)'),
    `the first Bind after: its row or one 26000 (${first.join(' ')})`,
  );
  t.same(shown(await use(a)), ['2', 'D(81)', 'C(SELECT 1)', 'Z(I)'], 'then it runs');
  const other = shown(await use(b));
  t.ok(
    other.includes('D(82)') || other[0]?.startsWith('E(ERROR 26000'),
    `another client's statement on that server: its row or one error (${other.join(' ')})`,
  );
  t.same(shown(await use(b)), ['2', 'D(82)', 'C(SELECT 1)', 'Z(I)'], 'then it runs too');
  await a.end();
  await b.end();
});

t.test(
  'a Parse sent again behind a DEALLOCATE ALL and skipped after an error: the server no longer has it, its next Parse is sent',
  async (t) => {
    // Client a keeps SQL X prepared on the one server (its statement outlives b's names). b drops every
    // statement, then its Parse of X, sent again behind the DEALLOCATE ALL, is skipped after an error in
    // the same pipeline: the server lacks X now, though it had it when that Parse went.
    await using proxy = await pooled('transaction');
    const x = 'SELECT 7 AS seven';
    const a = await PgConn.proxy(proxy.port, params(0, 'holds-x'));
    const b = await PgConn.proxy(proxy.port, params(1, 'drops-all'));
    t.same(shown(await ask(a, m.parse('a1', x), m.sync())), ['1', 'Z(I)']);
    const steps = [
      [m.parse('', 'DEALLOCATE ALL'), m.bind(''), m.execute(), m.parse('', 'SELEC 1'), m.parse('s2', x), m.sync()],
      [m.parse('s2', x), m.bind('s2'), m.execute(), m.sync()],
    ];
    const want = await direct(...steps);
    for (const [i, step] of steps.entries()) sameMessages(t, want[i]!, await ask(b, ...step), `step ${i + 1} as on a direct connection`);
    t.same(shown(want[1]!), ['1', '2', 'D(7)', 'C(SELECT 1)', 'Z(I)'], 'and that is: X runs');
    t.same(shown(await ask(a, m.bind('a1'), m.execute(), m.sync())), ['2', 'D(7)', 'C(SELECT 1)', 'Z(I)'], 'a still runs its own');
    await a.end();
    await b.end();
  },
);

t.test(
  'an unnamed Parse of DEALLOCATE in a failed transaction: refused, and the unnamed statement gone, as on a direct connection',
  async (t) => {
    // PostgreSQL refuses the Parse (25P02) after dropping the old unnamed statement: a Describe of it then
    // says it does not exist. The proxy's own messages for the DEALLOCATE must not come before the
    // client's Parse: refused in its place, they would leave the client's skipped and the old unnamed
    // statement on the server (the Describe's answer: 25P02).
    const client = scripted(
      [m.parse('s1', 'SELECT 1 AS one'), m.sync()],
      [m.parse('', 'BEGIN'), m.bind(''), m.execute(), m.sync()],
      // The unnamed statement, kept by the server; its Execute fails the transaction.
      [m.parse('', 'SELECT 1/0 AS boom'), m.bind(''), m.execute(), m.sync()],
      [m.parse('', 'DEALLOCATE s1'), m.bind(''), m.execute(), m.sync()],
      [m.describe('S', ''), m.sync()],
      [m.query('ROLLBACK')],
      [m.parse('', 'DEALLOCATE s1'), m.bind(''), m.execute(), m.sync()],
      [m.bind('s1'), m.execute(), m.sync()],
    );
    await sameAsDirect(t, 'transaction', 1, [client], 'refused in the failed transaction, then run after the ROLLBACK');
  },
);

t.test('a portal bound to DEALLOCATE ALL drops the names only if that portal is executed: bound again, or kept past a Sync', async (t) => {
  // A COMMIT inside the pipeline ends its transaction, and with it the portal p1 bound to DEALLOCATE ALL:
  // p1 bound again runs a SELECT, and s1 stays.
  const rebound = scripted(
    [m.parse('s1', 'SELECT 1 AS one'), m.sync()],
    [
      m.parse('', 'DEALLOCATE ALL'),
      m.bind('', [], 'p1'),
      m.parse('', 'COMMIT'),
      m.bind(''),
      m.execute(''),
      m.parse('', 'SELECT 2 AS two'),
      m.bind('', [], 'p1'),
      m.execute('p1'),
      m.sync(),
    ],
    [m.bind('s1'), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [rebound], 'p1 bound again after the COMMIT: s1 kept');
  // In a transaction block p1 outlives the Sync: its Execute in the next group runs DEALLOCATE ALL.
  const kept = scripted(
    [m.parse('s1', 'SELECT 1 AS one'), m.sync()],
    [m.query('BEGIN')],
    [m.parse('', 'DEALLOCATE ALL'), m.bind('', [], 'p1'), m.sync()],
    [m.execute('p1'), m.sync()],
    [m.query('COMMIT')],
    [m.bind('s1'), m.execute(), m.sync()],
    [m.parse('s1', 'SELECT 3 AS three'), m.bind('s1'), m.execute(), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [kept], 'p1 executed after the Sync: s1 gone, then prepared again');
});

t.test('an unnamed DEALLOCATE name finds the name when it runs, as PostgreSQL does, not when it was parsed', async (t) => {
  const cases: Array<[string, Client]> = [
    [
      'run twice: the second time the statement is gone',
      scripted([P('s1', 'SELECT 1 AS a'), S()], [P('', 'DEALLOCATE s1'), B(''), E(), S()], [B(''), E(), S()]),
    ],
    [
      'bound to two portals, both run',
      scripted([P('s1', 'SELECT 1 AS a'), S()], [P('', 'DEALLOCATE s1'), B('', [], 'p1'), B('', [], 'p2'), E('p1'), E('p2'), S()]),
    ],
    [
      'two DEALLOCATEs bound, then both run',
      scripted(
        [P('s1', 'SELECT 1 AS a'), P('s2', 'SELECT 2 AS b'), S()],
        [P('', 'DEALLOCATE s1'), B('', [], 'p1'), P('', 'DEALLOCATE s2'), B('', [], 'p2'), E('p1'), E('p2'), S()],
        [B('s2'), E(), S()],
      ),
    ],
    [
      'parsed before the statement was prepared',
      scripted([P('', 'DEALLOCATE s1'), S()], [P('s1', 'SELECT 1 AS a'), S()], [B(''), E(), S()], [B('s1'), E(), S()]),
    ],
    [
      'parsed, the statement closed, then run',
      scripted([P('s1', 'SELECT 1 AS a'), S()], [P('', 'DEALLOCATE s1'), S()], [m.close('S', 's1'), S()], [B(''), E(), S()]),
    ],
    [
      'parsed, the server reset between (a SET), then run',
      scripted(
        [P('s1', 'SELECT 1 AS a'), S()],
        [P('', 'DEALLOCATE s1'), S()],
        [P('x', 'SET extra_float_digits = 1'), B('x'), E(), S()],
        [B(''), E(), S()],
        [B('s1'), E(), S()],
      ),
    ],
  ];
  for (const [what, client] of cases) await sameAsDirect(t, 'transaction', 1, [client], what);
});

t.test('a DEALLOCATE with comments around it (query tags) acts on the client’s statement, in both protocols', async (t) => {
  const client = scripted(
    [m.parse('s1', 'SELECT 1 AS a'), m.parse('s2', 'SELECT 2 AS b'), m.sync()],
    [m.query('/* app:web */ DEALLOCATE s1')],
    [m.bind('s1'), m.execute(), m.sync()],
    [m.parse('', '-- tag\nDEALLOCATE s2 /* done */'), m.bind(''), m.execute(), m.sync()],
    [m.bind('s2'), m.execute(), m.sync()],
    [m.parse('s1', 'SELECT 3 AS c'), m.parse('s2', 'SELECT 4 AS d'), m.sync()],
  );
  await sameAsDirect(t, 'transaction', 1, [client], 'both dropped, both free to prepare again');
});

t.test('a Bind that fails to replace a portal bound to DEALLOCATE leaves it as it was: its Execute still drops the name', async (t) => {
  // The second Bind of p1 fails (the portal exists: 42P03); rolled back to the savepoint, p1 is still the
  // DEALLOCATE, and its Execute runs it.
  const stepwise = scripted(
    [P('s1', 'SELECT 1 AS a'), S()],
    [Q('BEGIN')],
    [P('', 'DEALLOCATE s1'), B('', [], 'p1'), S()],
    [Q('SAVEPOINT sp')],
    [P('', 'SELECT 2 AS b'), B('', [], 'p1'), S()],
    [Q('ROLLBACK TO SAVEPOINT sp')],
    [E('p1'), S()],
    [Q('COMMIT')],
    [B('s1'), E(), S()],
  );
  await sameAsDirect(t, 'transaction', 1, [stepwise], 'each step answered before the next');
  // The same in one pipeline: the Execute waits for the failed Bind's answer.
  const pipelined = scripted(
    [P('s1', 'SELECT 1 AS a'), S()],
    [Q('BEGIN')],
    [P('', 'DEALLOCATE s1'), B('', [], 'p1'), S(), Q('SAVEPOINT sp'), P('', 'SELECT 2 AS b'), B('', [], 'p1'), S()],
    [Q('ROLLBACK TO SAVEPOINT sp'), E('p1'), S(), Q('COMMIT'), B('s1'), E(), S()],
  );
  await sameAsDirect(t, 'transaction', 1, [pipelined], 'pipelined');
});

t.test('in a failed transaction, a Parse of a name the client has gets 42P05 if its SQL is a ROLLBACK, 25P02 if not', async (t) => {
  // PostgreSQL refuses every Parse in a failed transaction but a COMMIT's or a ROLLBACK's, and a name in use
  // only after that: the statement the proxy makes under the client's name first must not be refused earlier.
  const client = scripted(
    [P('r', 'ROLLBACK'), P('s1', 'SELECT 1 AS a'), S()],
    [Q('BEGIN')],
    [Q('SELECT 1/0')],
    [P('r', 'ROLLBACK'), S()],
    [P('s1', 'SELECT 1 AS a'), S()],
    [P('r', 'COMMIT'), B('r'), E(), S()],
    [B('r'), E(), S()],
    [B('s1'), E(), S()],
  );
  await sameAsDirect(t, 'transaction', 1, [client], 'each refused as PostgreSQL refuses it, the statements kept');
});

t.test('statement names longer than 63 bytes: PostgreSQL compares the first 63, so does the proxy', async (t) => {
  const stem = 'n'.repeat(63);
  const client = scripted(
    [P(`${stem}a`, 'SELECT 1 AS a'), S()],
    [B(`${stem}b`), E(), S()],
    [P(`${stem}c`, 'SELECT 2 AS b'), S()],
    [m.close('S', `${stem}d`), S()],
    [B(stem), E(), S()],
    [P(stem, 'SELECT 3 AS c'), B(`${stem}zz`), E(), S()],
  );
  await sameAsDirect(t, 'transaction', 1, [client], 'one statement under all those names');
  await sameAsDirect(t, 'session', 1, [client], 'session mode: passed as written');
  // The 63rd byte inside a character: PostgreSQL compares the bytes, a cut character included.
  const x = 'x'.repeat(62);
  const bytes = scripted(
    [P(`${x}éa`, 'SELECT 1 AS a'), S()],
    [P(`${x}中a`, 'SELECT 2 AS b'), S()],
    [B(`${x}中a`), E(), S()],
    [B(`${x}éz`), E(), S()],
    [P(`${x}éa`, 'SELECT 3 AS c'), S()],
    [P('', `DEALLOCATE "${x}éa"`), B(''), E(), S()],
    [P(x, 'SELECT 4 AS d'), S()],
    [P('', `DEALLOCATE "${x}éa"`), B(''), E(), S()],
    [B(x), E(), S()],
  );
  await sameAsDirect(t, 'transaction', 1, [bytes], 'names that differ only in a character cut at byte 63 are two');
  // An error names the statement as the client's message spelled it, not by its key.
  const spelled = scripted([P(`${'n'.repeat(63)}a`, 'SELECT $1::int AS a'), S()], [B(`${'n'.repeat(63)}b`), E(), S()]);
  await sameAsDirect(t, 'transaction', 1, [spelled], "an error says the Bind's own spelling");
});

t.test('the statement made under a client’s name for its duplicate Parse never acts: a SQL EXECUTE of the name fails', async (t) => {
  // The client's protocol statements live under the proxy's names; what a SQL EXECUTE of "s1" finds on the
  // server in that transaction is the proxy's stand-in, which must not roll the transaction back.
  await using proxy = await pooled('transaction');
  const c = await PgConn.proxy(proxy.port, params(0, 'proxy'));
  await ask(c, P('s1', 'SELECT 1 AS a'), S());
  await ask(c, Q('BEGIN; SAVEPOINT sp'));
  t.same(shown(await ask(c, P('s1', 'SELECT 2 AS b'), S())), ['E(ERROR 42P05 prepared statement "s1" already exists)', 'Z(E)']);
  await ask(c, Q('ROLLBACK TO SAVEPOINT sp'));
  const executed = shown(await ask(c, Q('EXECUTE s1')));
  t.match(executed, [/^E\(ERROR 3B001 /, 'Z(E)'], 'an error: the transaction is failed, not ended');
  t.same(shown(await ask(c, Q('COMMIT'))), ['C(ROLLBACK)', 'Z(I)'], 'the client hears its transaction was rolled back');
  await c.end();
});

t.test(
  'a client’s own DISCARD ALL in a pipeline with a BEGIN behind it: its settings are set again after its transaction, not inside it',
  async (t) => {
    for (const mode of ['transaction', 'session'] as const) {
      for (let round = 0; round < 10; round++) {
        await sameAsDirect(
          t,
          mode,
          1,
          [
            scripted([m.query('PREPARE q1 AS SELECT $1::int * 2 AS twice; EXECUTE q1(0)')]),
            scripted(
              [
                ...[m.parse('', 'DISCARD ALL'), m.bind(''), m.execute()],
                ...[m.parse('', 'SELECT 1/0 AS boom'), m.bind(''), m.execute(), m.sync()],
                ...[m.parse('', 'BEGIN'), m.bind(''), m.execute(), m.sync()],
              ],
              [m.parse('', 'DISCARD ALL'), m.bind(''), m.execute(), m.sync()],
            ),
          ],
          `${mode} mode, round ${round + 1}: every message as on a direct connection`,
        );
      }
    }
  },
);
