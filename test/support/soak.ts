// The soak: the real CLI in front of the test database for N minutes of mixed traffic with random
// faults, sampling the proxy process's resident memory and open file descriptors; fails on growth.
//   npm run soak -- 60        (an hour; CI runs 2 minutes)
//   npm run soak -- 60 --differential [transaction|session]: an hour of the pooling differential instead
//   (diff-soak.ts).
import pg from 'pg';
import { once } from 'node:events';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { cleanAwsEnv, serveArgs, startCli } from './cli.js';
import { startTestDb } from './testdb.js';
import { runPg } from './proxy.js';

const minutes = Number(process.argv[2] ?? 2);
if (process.argv[3] === '--differential') {
  const { soakDifferential } = await import('./diff-soak.js');
  const mode = process.argv[4];
  process.exit(await soakDifferential(minutes, mode === 'transaction' || mode === 'session' ? [mode] : ['transaction', 'session']));
}
const db = await startTestDb();
const cli = await startCli(
  serveArgs(db, '--http', '127.0.0.1:0', '--startup-timeout', '2'),
  cleanAwsEnv(db.dir, { AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey }),
);
const pid = cli.child.pid!;
const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
const fdCount = () => readdirSync(`/proc/${pid}/fd`).length;
const env = { PGHOST: '127.0.0.1', PGPORT: String(cli.port), PGUSER: 'iam_user', PGDATABASE: 'orders' };
const script = join(db.dir, 'soak.sql');
writeFileSync(script, 'SELECT count(*) FROM items;\n');

const until = Date.now() + minutes * 60_000;
const counts = { logins: 0, queries: 0, badClients: 0, faults: 0, clientErrors: 0 };
const samples: Array<{ s: number; rssKiB: number; fds: number }> = [];
const started = Date.now();
const baselineFds = fdCount();

async function logins() {
  while (Date.now() < until) {
    const r = await runPg('pgbench', ['-n', '-C', '-c', '2', '-j', '2', '-T', '5', '-f', script], env);
    const done = /actually processed: (\d+)/.exec(r.stdout);
    counts.logins += Number(done?.[1] ?? 0);
    if (r.code !== 0) counts.clientErrors++;
  }
}

async function longSession() {
  while (Date.now() < until) {
    const client = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'iam_user', database: 'orders' });
    client.on('error', () => undefined);
    try {
      await client.connect();
      while (Date.now() < until) {
        await client.query("SELECT repeat('x', 100000), pg_sleep(0.02)");
        counts.queries++;
      }
      await client.end();
    } catch {
      counts.clientErrors++; // a fault below ended it: reconnect
    }
  }
}

async function badClients() {
  while (Date.now() < until) {
    const socket = connect({ host: '127.0.0.1', port: cli.port });
    socket.on('error', () => undefined);
    socket.on('data', () => undefined);
    await once(socket, 'connect');
    socket.end(randomBytes(Math.floor(Math.random() * 200)));
    await once(socket, 'close');
    counts.badClients++;
  }
}

async function faults() {
  while (Date.now() < until) {
    await new Promise((r) => setTimeout(r, 5_000 + Math.random() * 10_000));
    if (Math.random() < 0.5) await db.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'iam_user'");
    else await db.rejectNext(2);
    counts.faults++;
  }
}

async function sample() {
  while (Date.now() < until) {
    samples.push({ s: Math.round((Date.now() - started) / 1000), rssKiB: rssKiB(), fds: fdCount() });
    // Keep only what the report needs (errors): an hour of session lines would fill this process.
    const kept = cli.lines.filter((l) => Number(l.level) >= 50);
    cli.lines.splice(0, cli.lines.length, ...kept);
    await new Promise((r) => setTimeout(r, 5_000));
  }
}

const tell = (name: string) => () => void (process.env.SOAK_DEBUG && process.stderr.write(`${name} done\n`));
await Promise.all([
  logins().then(tell('logins')),
  longSession().then(tell('long')),
  badClients().then(tell('bad')),
  faults().then(tell('faults')),
  sample().then(tell('sample')),
]);
const instance = cli.lines.filter((l) => Number(l.level) >= 50);
// Quiet now: the proxy must come back to its idle state.
for (let i = 0; i < 100 && fdCount() > baselineFds; i++) await new Promise((r) => setTimeout(r, 100));
const endFds = fdCount();
// Resident memory first climbs to where the heap settles (the first seconds), then follows the
// collector's sawtooth: under this traffic it swings by a third between collections (100 kB rows), so a
// median or a peak of a few samples measures where the saw was. A leak shows as the end staying above
// everything seen before: the lowest sample of the last quarter against the highest of the first half
// (after the first sample, taken before any traffic).
const quarter = Math.max(1, Math.floor(samples.length / 4));
const early = Math.max(...samples.slice(1, Math.max(2, Math.floor(samples.length / 2))).map((x) => x.rssKiB));
const late = Math.min(...samples.slice(-quarter).map((x) => x.rssKiB));
const report = {
  minutes,
  ...counts,
  proxyErrorsLogged: instance.length,
  errorSamples: [
    ...new Set(
      instance.map((l) => `${String(l.msg)}: ${JSON.stringify((l.err as { message?: string } | undefined)?.message ?? l.reason)}`),
    ),
  ].slice(0, 5),
  rssKiB: {
    firstHalfPeak: early,
    lastQuarterFloor: late,
    growth: +(late / early).toFixed(2),
    max: Math.max(...samples.map((x) => x.rssKiB)),
  },
  fds: { baseline: baselineFds, max: Math.max(...samples.map((x) => x.fds)), end: endFds },
  samples,
};
console.log(JSON.stringify(report, null, 1));
cli.child.kill('SIGTERM');
await cli.exit;
await db.destroy();
const ok = report.rssKiB.growth <= 1.1 && endFds <= baselineFds + 2 && report.proxyErrorsLogged === 0 && counts.logins > 0;
if (!ok) {
  console.error('soak: FAILED (memory or descriptors grew, or errors were logged)');
  process.exit(1);
}
