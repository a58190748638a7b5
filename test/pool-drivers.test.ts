// Real drivers at their defaults through transaction pooling, beyond what pool-transaction.test.ts drives:
// psycopg 3 preparing on its own (threshold 5, a cache of 100, DEALLOCATE when full and DEALLOCATE ALL after
// a DROP or ROLLBACK), psycopg with prepare_threshold 0 and in pipeline mode, libpq through psycopg's pgconn
// (PQprepare with the unnamed statement and with names, PQexecParams COPY), node-postgres whose query timed
// out (it destroys its socket: the server must be freed at once), postgres.js pipelining prepared queries
// with errors among them over one server, pgjdbc batches with an error inside.
import t from 'tap';
import pg from 'pg';
import postgres from 'postgres';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startTestDb } from './support/testdb.js';
import { startProxy, type TestProxy } from './support/proxy.js';
import { jdbcSkip, runJdbc } from './support/jdbc.js';
import type { PoolSettings } from '../src/pool/pool.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
await db.admin(
  'CREATE TABLE drv_copy (n int); GRANT INSERT, SELECT, DELETE ON drv_copy TO iam_user; CREATE TABLE drv_drop_me (n int);',
  'orders',
);

const TRANSACTION: PoolSettings = {
  mode: 'transaction',
  size: 2,
  maxServers: undefined,
  waitTimeoutMs: 10_000,
  idleTimeoutMs: 600_000,
  lifetimeMs: 3_600_000,
  resetQuery: 'DISCARD ALL',
  maxPreparedStatements: 200,
};
const pooled = (settings: Partial<PoolSettings> = {}) => startProxy(db, { pool: { ...TRANSACTION, ...settings } });

const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
/** Runs a Python script (psycopg 3 is Debian's python3-psycopg, in /usr/bin/python3); `conninfo` is set for it. */
function py(proxy: TestProxy, script: string): Promise<{ code: number | null; out: string; err: string }> {
  const prelude = `import psycopg, sys\nconninfo = "host=127.0.0.1 port=${proxy.port} user=iam_user dbname=orders"\n`;
  return new Promise((resolve) => {
    const p = spawn(python, ['-c', prelude + script], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ code, out, err }));
  });
}

t.test(
  'psycopg 3 at its defaults: 110 distinct queries, each prepared past the threshold of 5, a cache of 100 that deallocates',
  async (t) => {
    await using proxy = await pooled();
    const r = await py(
      proxy,
      `
conn = psycopg.connect(conninfo)  # autocommit off, prepare_threshold 5, prepared_max 100
total = 0
# Each query 7 times in a row: prepared on its 6th run; from the 101st on, each one prepared evicts the
# oldest (DEALLOCATE _pg3_N, sent by psycopg itself).
for i in range(110):
    for rep in range(7):
        total += conn.execute(f"SELECT {i}::int + %s", (rep,)).fetchone()[0]
    if i % 10 == 9:
        conn.commit()
conn.commit()
# and the first ones again: prepared again, under new names
for i in range(10):
    for rep in range(7):
        total += conn.execute(f"SELECT {i}::int + %s", (rep,)).fetchone()[0]
conn.commit()
print(total)
`,
    );
    t.equal(r.code, 0, r.err);
    let want = 0;
    for (let rep = 0; rep < 7; rep++) for (let i = 0; i < 110; i++) want += i + rep;
    for (let rep = 0; rep < 7; rep++) for (let i = 0; i < 10; i++) want += i + rep;
    t.equal(r.out.trim(), String(want));
  },
);

t.test('psycopg 3 at its defaults: DEALLOCATE ALL after a DROP and after a ROLLBACK, then preparing again', async (t) => {
  await using proxy = await pooled();
  const r = await py(
    proxy,
    `
conn = psycopg.connect(conninfo)
def round(k):
    s = 0
    for rep in range(7):
        for i in range(5):
            s += conn.execute(f"SELECT {i}::int * %s", (k,)).fetchone()[0]
    return s
total = round(1)
conn.commit()
# A DROP in a transaction: psycopg forgets its statements and sends DEALLOCATE ALL.
conn.execute("CREATE TEMP TABLE drv_tmp (n int)")
total += round(2)
conn.execute("DROP TABLE drv_tmp")
total += round(3)
conn.commit()
total += round(4)
conn.rollback()  # a ROLLBACK: the same
total += round(5)
conn.commit()
print(total)
`,
  );
  t.equal(r.code, 0, r.err);
  t.equal(r.out.trim(), String(70 * (1 + 2 + 3 + 4 + 5)));
});

t.test('psycopg 3, prepare_threshold=0: every query prepared, across servers, with a busy second client', async (t) => {
  await using proxy = await pooled();
  const r = await py(
    proxy,
    `
a = psycopg.connect(conninfo, prepare_threshold=0, autocommit=True)
b = psycopg.connect(conninfo, prepare_threshold=0)
total = 0
for i in range(60):
    total += a.execute("SELECT %s::int + 1", (i,)).fetchone()[0]
    total += b.execute("SELECT %s::int * 2", (i,)).fetchone()[0]
    if i % 7 == 0:
        b.commit()
b.commit()
print(total)
`,
  );
  t.equal(r.code, 0, r.err);
  t.equal(r.out.trim(), String((59 * 60) / 2 + 60 + 59 * 60));
});

// Statements of a pipeline that fails are not prepared: psycopg 3.1 takes a statement whose Parse the error
// skipped for prepared (a direct connection then says it does not exist, as the proxy does).
t.test('psycopg 3 pipeline mode: queries, an error inside the pipeline, and the pipeline going on', async (t) => {
  await using proxy = await pooled();
  const r = await py(
    proxy,
    `
conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=1)
total = 0
for rnd in range(3):
    with conn.pipeline() as p:
        curs = [conn.execute("SELECT %s::int + 10", (i,)) for i in range(20)]
        p.sync()
        total += sum(c.fetchone()[0] for c in curs)
    try:
        with conn.pipeline() as p:
            conn.execute("SELECT %s::int", (1,), prepare=False)
            conn.execute("SELECT 1/0")
            conn.execute("SELECT %s::int", (2,), prepare=False)
    except psycopg.errors.DivisionByZero:
        total += 1000
    with conn.pipeline():
        total += conn.execute("SELECT %s::int + 10", (5,)).fetchone()[0]
print(total)
`,
  );
  t.equal(r.code, 0, r.err);
  t.equal(r.out.trim(), String(3 * ((19 * 20) / 2 + 200 + 1000 + 15)));
});

t.test("libpq (psycopg's pgconn): PQprepare with the unnamed statement, then PQexecPrepared in later transactions", async (t) => {
  await using proxy = await pooled({ size: 1 });
  const r = await py(
    proxy,
    `
from psycopg import pq
c = pq.PGconn.connect(conninfo.encode())
assert c.status == pq.ConnStatus.OK, c.error_message
res = c.prepare(b"", b"SELECT $1::int * 3")
assert res.status == pq.ExecStatus.COMMAND_OK, res.error_message
out = []
for v in (b"7", b"8"):
    res = c.exec_prepared(b"", [v])
    assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
    out.append(res.get_value(0, 0).decode())
print(" ".join(out))
`,
  );
  t.equal(r.code, 0, r.err);
  t.equal(r.out.trim(), '21 24');
});

t.test('libpq: PQprepare with names across servers, and PQexecParams COPY FROM STDIN', async (t) => {
  await using proxy = await pooled();
  const r = await py(
    proxy,
    `
from psycopg import pq
a = pq.PGconn.connect(conninfo.encode())
b = pq.PGconn.connect(conninfo.encode())
for conn in (a, b):
    res = conn.prepare(b"lp_twice", b"SELECT $1::int * 2")
    assert res.status == pq.ExecStatus.COMMAND_OK, res.error_message
total = 0
for i in range(20):
    # b holds a server now and then: a's statement must follow it to the other one
    if i % 5 == 0:
        assert b.exec_(b"BEGIN").status == pq.ExecStatus.COMMAND_OK
    res = a.exec_prepared(b"lp_twice", [str(i).encode()])
    assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
    total += int(res.get_value(0, 0))
    if i % 5 == 4:
        assert b.exec_(b"COMMIT").status == pq.ExecStatus.COMMAND_OK
res = a.exec_params(b"COPY drv_copy (n) FROM STDIN", [])
assert res.status == pq.ExecStatus.COPY_IN, res.error_message
for n in range(100):
    a.put_copy_data(f"{n}\\n".encode())
a.put_copy_end()
res = a.get_result()
assert res.status == pq.ExecStatus.COMMAND_OK, res.error_message
assert a.get_result() is None
res = a.exec_(b"SELECT count(*) FROM drv_copy")
assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
print(total, res.get_value(0, 0).decode())
`,
  );
  t.equal(r.code, 0, r.err);
  t.equal(r.out.trim(), `${19 * 20} 100`);
});

t.test('node-postgres query_timeout through pg.Pool: the pool ends the client, its server is freed at once', async (t) => {
  await using proxy = await pooled({ size: 1 });
  // pg.Pool ends a client whose query failed with a timeout (release(err)): a Terminate behind a query
  // still running.
  const app = new pg.Pool({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders', query_timeout: 300, max: 1 });
  app.on('error', () => undefined);
  const err = await app.query('SELECT pg_sleep(20)').then(
    () => undefined,
    (e: Error) => e,
  );
  t.match(err, { message: /Query read timeout/ }, 'node-postgres gave up on the query');
  const b = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders', query_timeout: 5_000 });
  b.on('error', () => undefined);
  await b.connect();
  // 5 s is far below the 20 s the abandoned query would keep the only server.
  const one = await b.query('SELECT 1 AS one').then(
    (r) => r.rows[0].one as number,
    (e: Error) => e,
  );
  t.equal(one, 1, 'the next client is served while the abandoned query would still run');
  const left = await db.admin("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)'");
  t.equal(left, '0', 'the abandoned query runs no more');
  await b.end();
  await app.end();
});

t.test('postgres.js: pipelined prepared queries with errors among them, two connections over one server', async (t) => {
  await using proxy = await pooled({ size: 1 });
  const sql = postgres({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'iam_user',
    database: 'orders',
    max: 2,
    prepare: true,
    onnotice: () => undefined,
  });
  for (let round = 0; round < 3; round++) {
    const settled = await Promise.allSettled(
      Array.from({ length: 40 }, (_, i) =>
        i % 7 === 3 ? sql`SELECT 1/${i - i}::int AS n` : sql`SELECT ${i}::int AS n, ${`r${round}`}::text AS r`,
      ),
    );
    const wrong = settled.flatMap((s, i) => {
      if (i % 7 === 3) return s.status === 'rejected' && /division by zero/.test(String(s.reason)) ? [] : [`${i}: ${JSON.stringify(s)}`];
      return s.status === 'fulfilled' && s.value[0]?.n === i && s.value[0]?.r === `r${round}` ? [] : [`${i}: ${JSON.stringify(s)}`];
    });
    t.same(wrong, [], `round ${round}: every query its own answer, every error its own`);
  }
  await sql.end();
});

t.test(
  'pgjdbc: prepareThreshold=1, a batch with an error inside, then the same statements again on two connections',
  { skip: jdbcSkip() },
  async (t) => {
    await using proxy = await pooled({ size: 1 });
    const r = await runJdbc(
      db.dir,
      'JdbcBatch',
      proxy.port,
      `    Connection c1 = DriverManager.getConnection(url);
    Connection c2 = DriverManager.getConnection(url);
    long total = 0;
    for (int round = 0; round < 3; round++) {
      try (PreparedStatement ps = c1.prepareStatement("INSERT INTO drv_copy VALUES (10 / ?::int)")) {
        for (int d : new int[] {1, 2, 0, 5}) { ps.setInt(1, d); ps.addBatch(); }
        try { ps.executeBatch(); } catch (SQLException e) { total += 1000; }
      }
      for (Connection c : new Connection[] {c1, c2}) {
        try (PreparedStatement ps = c.prepareStatement("SELECT ?::int + 1")) {
          for (int i = 0; i < 5; i++) { ps.setInt(1, i); try (ResultSet rs = ps.executeQuery()) { rs.next(); total += rs.getInt(1); } }
        }
      }
    }
    System.out.println(total);`,
    );
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout.trim(), String(3 * (1000 + 2 * 15)));
  },
);
