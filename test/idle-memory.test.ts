// A guard on the memory an idle 1:1 session costs: the real CLI, started fresh, holding idle sessions,
// against the floor under it, Node's own TLS connection to PostgreSQL measured the same way in a fresh
// process of its own (support/idle-floor.ts). A ratio, not a timed figure: both run on the same machine
// and Node line, so what moves them both cancels out. Today's figures: docs/performance.md.
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startTestDb } from './support/testdb.js';
import { cleanAwsEnv, serveArgs, startCli } from './support/cli.js';
import { growthPerConnection } from './support/idle-floor.js';

const SESSIONS = 150;
/**
 * Resident growth moves in steps as the heaps grow, so the bound is generous: measured ratios 0.75-1.25 on
 * Node 20, 22, 24 and 26. It catches what keeps half a TLS connection or more per idle session (a 32 KiB
 * buffer, say); smaller moves are within the measure's spread (docs/performance.md).
 */
const BOUND = 1.5;
const db = await startTestDb();
t.teardown(() => db.destroy());

t.test('an idle session costs at most 1.5x the resident memory of a bare TLS connection to PostgreSQL', async (t) => {
  const floorScript = fileURLToPath(new URL('./support/idle-floor.js', import.meta.url));
  // The launcher's V8 flag (bin/pg-iam-proxy.js), so that both processes grow their heaps alike.
  const floorRun = await promisify(execFile)(process.execPath, [
    '--semi-space-growth-factor=1',
    floorScript,
    '127.0.0.1',
    String(db.port),
    db.endpoint,
    db.caFile,
    'trust_user',
    'orders',
    String(SESSIONS),
  ]);
  const floor = (JSON.parse(floorRun.stdout) as { bytes: number }).bytes;

  const cli = await startCli(
    serveArgs(db, '--client-tls', 'off'),
    cleanAwsEnv(db.dir, { AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey }),
  );
  t.teardown(() => cli.child.kill('SIGKILL'));
  const open = async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: cli.port, user: 'trust_user', database: 'orders' });
    await client.connect();
    await client.query('SELECT 1');
    return client;
  };
  const { bytes, held } = await growthPerConnection(cli.child.pid!, SESSIONS, open);
  await Promise.all(held.map((c) => c.end()));
  const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
  t.ok(bytes <= floor * BOUND, `an idle session: ${kib(bytes)} of the proxy's resident memory; a bare TLS connection: ${kib(floor)}`);
});
