// `npm run bench:stand [-- PROXY OPTIONS]`: start the benchmark's targets and keep them up, for profiling by
// hand (perf, strace, node --cpu-prof on a second proxy). Prints each target's libpq settings and pid;
// Ctrl-C (or SIGTERM, SIGHUP) stops everything.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTargets, type Target } from './targets.js';

const targets = await startTargets(process.argv.slice(2));
for (const target of ['direct', 'proxy', 'pgbouncer'] as Target[]) {
  // No token on the screen: direct logins get theirs from `pg-iam-proxy token` with the environment below.
  const settings = Object.entries(await targets.pgEnv(target))
    .filter(([k]) => k !== 'PGPASSWORD')
    .map(([k, v]) => `${k}=${v}`);
  const pid = target === 'direct' ? '' : `  # pid ${targets.pids[target]}`;
  process.stdout.write(`${target}: ${settings.join(' ')}${pid}\n`);
}
// A second proxy to profile needs the test database's own (throwaway) access key: `. DIR/proxy.env`.
const envFile = join(targets.db.dir, 'proxy.env');
writeFileSync(
  envFile,
  ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_EC2_METADATA_DISABLED']
    .map((k) => `export ${k}='${targets.env[k]}'\n`)
    .join(''),
  { mode: 0o600 },
);
process.stdout.write(
  `database: ${targets.db.endpoint}:${targets.db.port} at 127.0.0.1, --ca-file ${targets.db.caFile}; a second proxy's environment: . ${envFile}\n`,
);
await new Promise<void>((resolve) => {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(signal, () => resolve());
});
await targets.stop();
