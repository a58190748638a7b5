// Connection setup through the proxy against direct verify-full TLS logins with a token, on the RDS-like
// test database: `npm run build && node build/test/support/connect-bench.js`. pgbench -C opens a new
// connection per transaction, so its TPS is the connection rate; both sides pay the same IAM check.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Signer } from '@aws-sdk/rds-signer';
import { startTestDb } from './testdb.js';
import { runPg, startProxy } from './proxy.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const db = await startTestDb();
const proxy = await startProxy(db);
const script = join(db.dir, 'one.sql');
await writeFile(script, 'SELECT 1;\n');
const token = await new Signer({ hostname: db.endpoint, port: db.port, region: db.region, username: 'iam_user', credentials: db.key }).getAuthToken();
const args = ['-n', '-C', '-c', '4', '-j', '2', '-T', '5', '-f', script];
const direct = { PGHOST: db.endpoint, PGHOSTADDR: '127.0.0.1', PGPORT: String(db.port), PGSSLMODE: 'verify-full', PGSSLROOTCERT: db.caFile, PGPASSWORD: token, PGUSER: 'iam_user', PGDATABASE: 'orders' };
const proxied = { PGHOST: '127.0.0.1', PGPORT: String(proxy.port), PGSSLMODE: 'disable', PGUSER: 'iam_user', PGDATABASE: 'orders' };
const rate = async (env: Record<string, string>) => {
  const r = await runPg('pgbench', args, env);
  const tps = /tps = ([\d.]+)/.exec(r.stdout);
  if (!tps) throw new Error(r.stderr);
  const latency = /latency average = ([\d.]+) ms/.exec(r.stdout);
  return { tps: Number(tps[1]), latencyMs: Number(latency?.[1]) };
};
const results: Array<{ direct: number; proxy: number; directMs: number; proxyMs: number }> = [];
for (let i = 0; i < ROUNDS; i++) {
  const d = await rate(direct);
  const p = await rate(proxied);
  results.push({ direct: d.tps, proxy: p.tps, directMs: d.latencyMs, proxyMs: p.latencyMs });
}
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const md = median(results.map((r) => r.direct));
const mp = median(results.map((r) => r.proxy));
console.log(JSON.stringify({ rounds: results, medianConnPerSecDirect: md, medianConnPerSecProxy: mp, ratio: +(mp / md).toFixed(3),
  perConnectionOverheadMs: +((4 / mp - 4 / md) * 1000).toFixed(2), tokensSigned: proxy.signed() }, null, 1));
await proxy.close();
await db.destroy();
