// `npm run bench`: the proxy against direct verify-full TLS and against pgbouncer (session mode, TLS to
// the same database), measured side by side in one run, A/B interleaved, repeated; medians and ratios
// into bench/results/latest.md and a chart, bench/results/latest.svg. Starts what it needs: the test
// database (IAM tokens checked over PAM), pgbouncer from Debian's packages (installed when absent).
//   ROUNDS=3 SECONDS=5 npm run bench
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { closedPort, runPg } from '../test/support/proxy.js';
import { BIN, serveArgs, startCli } from '../test/support/cli.js';
import { inBatches, say, startBouncer, startTargets, type Target } from './targets.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SECONDS = Number(process.env.SECONDS ?? 5);
const CLIENTS = [1, 8, 32];
const RESULTS = fileURLToPath(new URL('../../bench/results/', import.meta.url));

const { db, env, pids, pgEnv, stop, token, bouncerVersion } = await startTargets();
const pidOf: Partial<Record<Target, number>> = pids;
const TICK = Number(execFileSync('getconf', ['CLK_TCK']).toString());
const cpuSeconds = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICK; // utime + stime
};
const rss = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

// --- pgbench select-only --------------------------------------------------------------------------
interface Run {
  tps: number;
  latencyMs: number;
  cpuUsPerTx?: number;
}
async function pgbench(target: Target, clients: number, extra: string[] = ['-S']): Promise<Run> {
  return pgbenchOn(target, await pgEnv(target), pidOf[target], clients, extra);
}
async function pgbenchOn(
  name: string,
  libpq: Record<string, string>,
  pid: number | undefined,
  clients: number,
  extra: string[],
  threads = Math.min(clients, 2),
): Promise<Run> {
  const cpu0 = pid ? cpuSeconds(pid) : 0;
  const r = await runPg('pgbench', ['-n', ...extra, '-c', String(clients), '-j', String(threads), '-T', String(SECONDS)], libpq);
  const tx = Number(/actually processed: (\d+)/.exec(r.stdout)?.[1]);
  if (!tx) throw new Error(`${name}: ${r.stderr}`);
  const run: Run = {
    tps: Number(/tps = ([\d.]+)/.exec(r.stdout)![1]),
    latencyMs: Number(/latency average = ([\d.]+) ms/.exec(r.stdout)![1]),
  };
  if (pid) run.cpuUsPerTx = ((cpuSeconds(pid) - cpu0) / tx) * 1e6;
  return run;
}

const selectOnly: Record<number, Record<Target, Run[]>> = {};
for (const clients of CLIENTS) {
  selectOnly[clients] = { direct: [], proxy: [], pgbouncer: [] };
  for (let round = 0; round < ROUNDS; round++) {
    // Interleaved, the order rotated each round so no side always runs first.
    const order: Target[] = (['direct', 'proxy', 'pgbouncer'] as Target[]).map((_, i, all) => all[(i + round) % 3]!);
    for (const target of order) selectOnly[clients]![target].push(await pgbench(target, clients));
    say(`select-only, ${clients} clients, round ${round + 1}/${ROUNDS}`);
  }
}

// --- connection setup (a new IAM login per transaction) -----------------------------------------
// One client: the latency of a login itself, not of logins queued behind the database's PAM checks on
// two cores.
const script = join(db.dir, 'one.sql');
writeFileSync(script, 'SELECT 1;\n');
const connect: Record<'direct' | 'proxy', Run[]> = { direct: [], proxy: [] };
for (let round = 0; round < ROUNDS; round++) {
  for (const target of ['direct', 'proxy'] as const) connect[target].push(await pgbench(target, 1, ['-C', '-f', script]));
}
say('connection setup');

// --- pooled connect: a connect that reuses a logged-in server -------------------------
// The proxy in --pool-mode session against pgbouncer in session mode, one client, a connection per
// transaction (pgbench -C); and the IAM logins the proxy's connects cost.
const pooledProxy = await startCli(serveArgs(db, '--client-tls', 'off', '--pool-mode', 'session'), env);
const pooledEnv = { PGHOST: '127.0.0.1', PGPORT: String(pooledProxy.port), PGSSLMODE: 'disable', PGUSER: 'iam_user', PGDATABASE: 'orders' };
// Beside them, Node's floor (floor.ts): the same connects with nothing but Node's own work, on the
// proxy's Node line.
const floorPort = await closedPort();
const floor = spawn(
  process.env.BENCH_NODE ?? process.execPath,
  [fileURLToPath(new URL('floor.js', import.meta.url)), String(floorPort), String(db.port), db.endpoint, db.caFile],
  { env: { ...process.env, FLOOR_TOKEN: await token() }, stdio: ['ignore', 'pipe', 'inherit'] },
);
await Promise.race([
  once(floor.stdout, 'data'),
  once(floor, 'exit').then(() => {
    throw new Error('bench: the floor (floor.ts) did not start');
  }),
]);
const floorEnv = { ...pooledEnv, PGPORT: String(floorPort) };
const pooledConnect: Record<'proxy' | 'pgbouncer' | 'floor', Run[]> = { proxy: [], pgbouncer: [], floor: [] };
const loginsBefore = (await db.checkerLog()).length;
let pooledConnects = 0;
for (let round = 0; round < ROUNDS; round++) {
  const proxyRun = await pgbenchOn('pooled proxy', pooledEnv, pooledProxy.child.pid, 1, ['-C', '-f', script]);
  pooledConnects += Math.round(proxyRun.tps * SECONDS);
  pooledConnect.proxy.push(proxyRun);
  pooledConnect.pgbouncer.push(await pgbench('pgbouncer', 1, ['-C', '-f', script]));
  pooledConnect.floor.push(await pgbenchOn('floor', floorEnv, floor.pid, 1, ['-C', '-f', script]));
}
const pooledLogins = (await db.checkerLog()).length - loginsBefore; // the floor logged in before
floor.kill();
pooledProxy.child.kill('SIGTERM');
await pooledProxy.exit;
say('pooled connect');

// --- transaction pooling: 8 and 32 clients over a pool of 4 ------------------------------
// pgbench -S -M prepared through the proxy in --pool-mode transaction against pgbouncer in transaction
// mode with max_prepared_statements (1.21+: PGBOUNCER_ROOT, see targets.ts; Debian bookworm's 1.18 has
// none, so it is measured with -M extended, unnamed statements, and the row says so). A thread per
// client: pgbench prepares with a blocking call.
const TX_CLIENTS = [8, 32] as const;
const TX_POOL = 4;
const txProxy = await startCli(serveArgs(db, '--client-tls', 'off', '--pool-mode', 'transaction', '--pool-size', String(TX_POOL)), env);
const txBouncer = await startBouncer(db, await token(), { mode: 'transaction', poolSize: TX_POOL, maxPreparedStatements: 200 });
const txEnv = (port: number) => ({
  PGHOST: '127.0.0.1',
  PGPORT: String(port),
  PGSSLMODE: 'disable',
  PGUSER: 'iam_user',
  PGDATABASE: 'orders',
});
const bouncerTxMode = txBouncer.preparedStatements ? 'prepared' : 'extended';
// Node's floor for transaction pooling (floor-tx.ts), on the proxy's Node line: unnamed statements only, so
// it is compared with pgbouncer and the proxy under -M extended.
const txFloorPort = await closedPort();
const txFloor = spawn(
  process.env.BENCH_NODE ?? process.execPath,
  [fileURLToPath(new URL('floor-tx.js', import.meta.url)), String(txFloorPort), String(db.port), db.endpoint, db.caFile, String(TX_POOL)],
  { env: { ...process.env, FLOOR_TOKEN: await token() }, stdio: ['ignore', 'pipe', 'inherit'] },
);
await Promise.race([
  once(txFloor.stdout, 'data'),
  once(txFloor, 'exit').then(() => {
    throw new Error('bench: the transaction-mode floor (floor-tx.ts) did not start');
  }),
]);
type TxRuns = Record<'proxy' | 'proxyExtended' | 'pgbouncer' | 'pgbouncerExtended' | 'floor', Run[]>;
const txPooled: Record<number, TxRuns> = {};
for (const clients of TX_CLIENTS) {
  const runsOf: TxRuns = (txPooled[clients] = { proxy: [], proxyExtended: [], pgbouncer: [], pgbouncerExtended: [], floor: [] });
  for (let round = 0; round < ROUNDS; round++) {
    const runs = [
      async () =>
        runsOf.proxy.push(await pgbenchOn('tx proxy', txEnv(txProxy.port), txProxy.child.pid, clients, ['-S', '-M', 'prepared'], clients)),
      async () =>
        runsOf.proxyExtended.push(
          await pgbenchOn('tx proxy extended', txEnv(txProxy.port), txProxy.child.pid, clients, ['-S', '-M', 'extended'], clients),
        ),
      async () =>
        runsOf.pgbouncer.push(
          await pgbenchOn('tx pgbouncer', txEnv(txBouncer.port), txBouncer.pid, clients, ['-S', '-M', bouncerTxMode], clients),
        ),
      async () =>
        runsOf.pgbouncerExtended.push(
          await pgbenchOn('tx pgbouncer extended', txEnv(txBouncer.port), txBouncer.pid, clients, ['-S', '-M', 'extended'], clients),
        ),
      async () =>
        runsOf.floor.push(await pgbenchOn('tx floor', txEnv(txFloorPort), txFloor.pid!, clients, ['-S', '-M', 'extended'], clients)),
    ];
    for (let i = 0; i < runs.length; i++) await runs[(i + round) % runs.length]!();
    say(`transaction pooling, ${clients} clients, round ${round + 1}/${ROUNDS}`);
  }
}
txBouncer.stop();
txFloor.kill();

// Idle clients of transaction pooling: 1,000 clients (each ran one query) over a pool of 10 hold no
// server; the proxy's resident set grows by this much per client.
const IDLE_TX = 1_000;
const perIdleTx: number[] = [];
for (let round = 0; round < 3; round++) {
  const fresh = await startCli(serveArgs(db, '--client-tls', 'off', '--pool-mode', 'transaction', '--pool-size', '10'), env);
  const warm = new pg.Client({ host: '127.0.0.1', port: fresh.port, user: 'iam_user', database: 'orders' });
  await warm.connect();
  await warm.query('SELECT 1');
  await warm.end();
  await new Promise((r) => setTimeout(r, 500)); // its start-up garbage collected
  const before = rss(fresh.child.pid!);
  const clients = await inBatches(IDLE_TX, 100, async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: fresh.port, user: 'iam_user', database: 'orders' });
    await c.connect();
    await c.query('SELECT 1');
    return c;
  });
  await new Promise((r) => setTimeout(r, 1_000)); // settled
  perIdleTx.push((rss(fresh.child.pid!) - before) / IDLE_TX);
  await Promise.all(clients.map((c) => c.end()));
  fresh.child.kill('SIGTERM');
  await fresh.exit;
}
txProxy.child.kill('SIGTERM');
await txProxy.exit;
say('transaction pooling: idle clients');

// --- bulk transfer: COPY out and in ------------------------------------------------------------
const ROWS = 200_000; // 200,000 rows of 1,000 bytes: about 200 MB each way
const bulkFile = join(db.dir, 'bulk.txt');
writeFileSync(bulkFile, `${'x'.repeat(999)}\n`.repeat(ROWS / 2));
async function copy(target: 'direct' | 'proxy', direction: 'out' | 'in'): Promise<number> {
  const sql =
    direction === 'out'
      ? `\\copy (SELECT repeat('x', 999) FROM generate_series(1, ${ROWS})) TO '/dev/null'`
      : `\\copy bulk FROM '${bulkFile}'`;
  const t0 = performance.now();
  const r = await runPg('psql', ['-X', '-q', '-c', sql], await pgEnv(target));
  if (r.code !== 0) throw new Error(`${target} copy ${direction}: ${r.stderr}`);
  const ms = performance.now() - t0;
  if (direction === 'in') await db.admin('TRUNCATE bulk', 'orders');
  return ms;
}
const bulk: Record<string, number[]> = { 'direct out': [], 'proxy out': [], 'direct in': [], 'proxy in': [] };
for (let round = 0; round < ROUNDS; round++) {
  for (const direction of ['out', 'in'] as const)
    for (const target of ['direct', 'proxy'] as const) bulk[`${target} ${direction}`]!.push(await copy(target, direction));
}
say('bulk COPY');

// --- resident memory per idle connection -------------------------------------------------------
// A fresh proxy each time (as a sidecar starts), one connection to warm it, then IDLE held open: the
// growth of its resident set, per connection. Median of three.
const IDLE = 150;
const connectIdle = async (port: number) => {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'iam_user', database: 'orders' });
  await c.connect();
  return c;
};
const perIdle: number[] = [];
for (let round = 0; round < 3; round++) {
  const fresh = await startCli(serveArgs(db, '--client-tls', 'off'), env);
  await (await connectIdle(fresh.port)).end();
  await new Promise((r) => setTimeout(r, 500)); // its start-up garbage collected
  const before = rss(fresh.child.pid!);
  const idle = await inBatches(IDLE, 25, () => connectIdle(fresh.port));
  await new Promise((r) => setTimeout(r, 1_000)); // settled
  perIdle.push((rss(fresh.child.pid!) - before) / IDLE);
  await Promise.all(idle.map((c) => c.end()));
  fresh.child.kill('SIGTERM');
  await fresh.exit;
}
const perIdleBytes = median(perIdle);
say('idle memory');

// --- start-up time to listening ------------------------------------------------------------------
const startups: number[] = [];
for (let i = 0; i < 5; i++) {
  const t0 = performance.now();
  const child = spawn(
    process.env.BENCH_NODE ?? process.execPath,
    [BIN, `${db.endpoint}:${db.port}`, '--listen', '127.0.0.1:0', '--ca-file', db.caFile, '--log-format', 'json'],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let text = '';
  await new Promise<void>((resolve) => child.stderr!.on('data', (d) => ((text += d), text.includes('"msg":"listening"') && resolve())));
  startups.push(performance.now() - t0);
  child.kill('SIGKILL');
  await once(child, 'exit');
}
say('start-up');

// --- report ----------------------------------------------------------------------------------------
const m = (runs: Run[], key: keyof Run) => median(runs.map((r) => r[key] ?? NaN));
const rows = CLIENTS.map((c) => {
  const s = selectOnly[c]!;
  return {
    clients: c,
    direct: m(s.direct, 'tps'),
    proxy: m(s.proxy, 'tps'),
    pgbouncer: m(s.pgbouncer, 'tps'),
    proxyCpu: m(s.proxy, 'cpuUsPerTx'),
    bouncerCpu: m(s.pgbouncer, 'cpuUsPerTx'),
    latency: { direct: m(s.direct, 'latencyMs'), proxy: m(s.proxy, 'latencyMs'), pgbouncer: m(s.pgbouncer, 'latencyMs') },
  };
});
const f = (x: number, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
// With -C each transaction opens its own connection: its latency is the time to connect, log in, query.
const connDirect = m(connect.direct, 'latencyMs');
const connProxy = m(connect.proxy, 'latencyMs');
const lines = [
  `# pg-iam-proxy benchmark`,
  '',
  `${new Date().toISOString().slice(0, 10)}, ${execFileSync('nproc').toString().trim()} cores, the proxy on Node ${execFileSync(
    process.env.BENCH_NODE ?? process.execPath,
    ['--version'],
  )
    .toString()
    .trim()} (BENCH_NODE), PostgreSQL 15 (test database: IAM tokens over PAM), pgbouncer ${bouncerVersion.replace(/^PgBouncer /, '')}; medians of ${ROUNDS} interleaved rounds of ${SECONDS} s.`,
  '',
  '## pgbench select-only (-S), persistent connections',
  '',
  '| clients | direct TLS tps | proxy tps | pgbouncer tps | proxy / direct | proxy / pgbouncer | proxy CPU µs/tx | pgbouncer CPU µs/tx | CPU proxy / pgbouncer | latency ms direct / proxy / pgbouncer |',
  '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ...rows.map(
    (r) =>
      `| ${r.clients} | ${f(r.direct)} | ${f(r.proxy)} | ${f(r.pgbouncer)} | ${f(r.proxy / r.direct, 2)} | ${f(r.proxy / r.pgbouncer, 2)} | ${f(r.proxyCpu, 1)} | ${f(r.bouncerCpu, 1)} | ${f(r.proxyCpu / r.bouncerCpu, 2)} | ${f(r.latency.direct, 3)} / ${f(r.latency.proxy, 3)} / ${f(r.latency.pgbouncer, 3)} |`,
  ),
  '',
  '## Other measures',
  '',
  '| measure | direct | proxy | ratio |',
  '|---|---:|---:|---:|',
  `| COPY out, ${ROWS.toLocaleString('en-US')} rows x 1 kB, ms | ${f(median(bulk['direct out']!))} | ${f(median(bulk['proxy out']!))} | ${f(median(bulk['proxy out']!) / median(bulk['direct out']!), 2)} |`,
  `| COPY in, ${(ROWS / 2).toLocaleString('en-US')} rows x 1 kB, ms | ${f(median(bulk['direct in']!))} | ${f(median(bulk['proxy in']!))} | ${f(median(bulk['proxy in']!) / median(bulk['direct in']!), 2)} |`,
  `| connection setup (pgbench -C, 1 client), connections/s | ${f(m(connect.direct, 'tps'), 1)} | ${f(m(connect.proxy, 'tps'), 1)} | ${f(m(connect.proxy, 'tps') / m(connect.direct, 'tps'), 2)} |`,
  `| connection setup, ms per connection (pgbench -C latency) | ${f(connDirect, 2)} | ${f(connProxy, 2)} | +${f(connProxy - connDirect, 2)} ms |`,
  `| resident memory per idle proxied connection (${IDLE} held by a fresh proxy, median of 3) | | ${f(perIdleBytes / 1024, 1)} KiB | |`,
  `| start to listening (node start included), median of 5 | | ${f(median(startups))} ms | |`,
  '',
  '## Pooled connect (--pool-mode session), pgbench -C, 1 client',
  '',
  '| measure | pgbouncer (session) | proxy (session) | proxy / pgbouncer |',
  '|---|---:|---:|---:|',
  `| connections/s | ${f(m(pooledConnect.pgbouncer, 'tps'), 1)} | ${f(m(pooledConnect.proxy, 'tps'), 1)} | ${f(m(pooledConnect.proxy, 'tps') / m(pooledConnect.pgbouncer, 'tps'), 2)} |`,
  `| ms per connection (latency) | ${f(m(pooledConnect.pgbouncer, 'latencyMs'), 3)} | ${f(m(pooledConnect.proxy, 'latencyMs'), 3)} | ${f(m(pooledConnect.proxy, 'latencyMs') / m(pooledConnect.pgbouncer, 'latencyMs'), 2)} |`,
  `| CPU µs per connection | ${f(m(pooledConnect.pgbouncer, 'cpuUsPerTx'), 1)} | ${f(m(pooledConnect.proxy, 'cpuUsPerTx'), 1)} | ${f(m(pooledConnect.proxy, 'cpuUsPerTx') / m(pooledConnect.pgbouncer, 'cpuUsPerTx'), 2)} |`,
  `| IAM logins for the proxy's ${pooledConnects.toLocaleString('en-US')} connects | | ${pooledLogins} | |`,
  '',
  `Node's floor (bench/floor.ts: one kept TLS server connection, a canned greeting, each Query passed on, DISCARD ALL after each client; no logs, statement names, settings, cancel keys or metrics): ${f(m(pooledConnect.floor, 'tps'), 1)} connections/s, ${f(m(pooledConnect.floor, 'cpuUsPerTx'), 1)} µs of CPU each (${f(m(pooledConnect.floor, 'cpuUsPerTx') / m(pooledConnect.pgbouncer, 'cpuUsPerTx'), 2)}x pgbouncer's; the proxy ${f(m(pooledConnect.proxy, 'cpuUsPerTx') / m(pooledConnect.floor, 'cpuUsPerTx'), 2)}x the floor's).`,
  '',
  `## Transaction pooling, pgbench -S, ${TX_CLIENTS.join(' and ')} clients over a pool of ${TX_POOL}`,
  '',
  `pgbouncer: ${txBouncer.version}, pool_mode = transaction${txBouncer.preparedStatements ? ', max_prepared_statements = 200, -M prepared' : ' (no max_prepared_statements before 1.21: -M extended)'}.`,
  '',
  '| clients | measure | pgbouncer | proxy -M prepared | proxy prepared / pgbouncer | pgbouncer -M extended | proxy -M extended | floor -M extended | floor / pgbouncer, extended |',
  '|---:|---|---:|---:|---:|---:|---:|---:|---:|',
  ...TX_CLIENTS.flatMap((clients) => {
    const r = txPooled[clients]!;
    const row = (measure: string, key: keyof Run, digits: number, ratios: boolean) =>
      `| ${clients} | ${measure} | ${f(m(r.pgbouncer, key), digits)} | ${f(m(r.proxy, key), digits)} | ${ratios ? f(m(r.proxy, key) / m(r.pgbouncer, key), 2) : ''} | ${f(m(r.pgbouncerExtended, key), digits)} | ${f(m(r.proxyExtended, key), digits)} | ${f(m(r.floor, key), digits)} | ${ratios ? f(m(r.floor, key) / m(r.pgbouncerExtended, key), 2) : ''} |`;
    return [row('tps', 'tps', 0, true), row('CPU µs per transaction', 'cpuUsPerTx', 1, true), row('latency ms', 'latencyMs', 2, false)];
  }),
  '',
  "Node's floor for transaction pooling (bench/floor-tx.ts: the pool's servers logged in once and kept, a canned greeting, each client's transaction passed to an idle server or queued for the next, the server lent on at its ReadyForQuery idle; no statement names, settings, ledger, logs, timeouts or metrics): the least a Node program spends per transaction here.",
  '',
  `Resident memory per idle transaction-mode client (${IDLE_TX.toLocaleString('en-US')} clients, pool of 10, median of 3): ${f(median(perIdleTx) / 1024, 1)} KiB.`,
  '',
  'Targets (pooling): pooled connect CPU <= pgbouncer, 1,000 connects <= pool-size logins, transaction-mode TPS >= pgbouncer and CPU per transaction <= 1.3x (8 and 32 clients over 4 servers), <= 16 KiB per idle transaction-mode client.',
  '',
  'Targets (the 1:1 relay): CPU/tx <= 1.0x pgbouncer, TPS >= 1.0x pgbouncer at 8 clients, COPY <= 1.05x direct, setup <= direct + 1 ms, <= 32 KiB per idle connection, start <= 250 ms.',
  '',
];
mkdirSync(RESULTS, { recursive: true });
writeFileSync(join(RESULTS, 'latest.md'), lines.join('\n'));
writeFileSync(join(RESULTS, 'latest.svg'), chart(rows));
writeFileSync(
  join(RESULTS, 'latest.json'),
  JSON.stringify({ rows, connect, pooledConnect, pooledLogins, txPooled, perIdleTx, bulk, perIdle, startups }, null, 1),
);
process.stdout.write(lines.join('\n'));

await stop();

/** Two panels: throughput and CPU per transaction by client count. */
function chart(data: typeof rows): string {
  const W = 360;
  const H = 220;
  const pad = 40;
  const colors = { direct: '#888', proxy: '#1f77b4', pgbouncer: '#ff7f0e' };
  const panel = (x0: number, title: string, series: Array<[string, number[]]>) => {
    const max = Math.max(...series.flatMap(([, v]) => v)) * 1.1;
    const xs = data.map((_, i) => x0 + pad + (i * (W - 2 * pad)) / (data.length - 1));
    const y = (v: number) => H - pad + -((v / max) * (H - 2 * pad));
    return [
      `<text x="${x0 + W / 2}" y="18" text-anchor="middle" font-size="13">${title}</text>`,
      `<line x1="${x0 + pad}" y1="${H - pad}" x2="${x0 + W - pad}" y2="${H - pad}" stroke="#000"/>`,
      `<line x1="${x0 + pad}" y1="${pad}" x2="${x0 + pad}" y2="${H - pad}" stroke="#000"/>`,
      ...data.map((d, i) => `<text x="${xs[i]}" y="${H - pad + 15}" text-anchor="middle" font-size="11">${d.clients}</text>`),
      `<text x="${x0 + W / 2}" y="${H - 8}" text-anchor="middle" font-size="11">clients</text>`,
      `<text x="${x0 + pad - 4}" y="${pad}" text-anchor="end" font-size="10">${Math.round(max)}</text>`,
      ...series.map(
        ([name, values]) =>
          `<polyline fill="none" stroke-width="2" stroke="${colors[name as keyof typeof colors]}" points="${values.map((v, i) => `${xs[i]},${y(v)}`).join(' ')}"/>` +
          values.map((v, i) => `<circle cx="${xs[i]}" cy="${y(v)}" r="3" fill="${colors[name as keyof typeof colors]}"/>`).join(''),
      ),
    ].join('\n');
  };
  const legend = Object.entries(colors)
    .map(
      ([name, color], i) =>
        `<rect x="${250 + i * 110}" y="${H + 8}" width="12" height="12" fill="${color}"/><text x="${266 + i * 110}" y="${H + 18}" font-size="12">${name}</text>`,
    )
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H + 30}" font-family="sans-serif"><rect width="100%" height="100%" fill="#fff"/>
${panel(0, 'pgbench -S transactions per second', [
  ['direct', data.map((d) => d.direct)],
  ['proxy', data.map((d) => d.proxy)],
  ['pgbouncer', data.map((d) => d.pgbouncer)],
])}
${panel(W, 'CPU microseconds per transaction', [
  ['proxy', data.map((d) => d.proxyCpu)],
  ['pgbouncer', data.map((d) => d.bouncerCpu)],
])}
${legend}</svg>\n`;
}
