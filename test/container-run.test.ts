// The container image built from the Dockerfile and run for real (podman, runc): as the non-root node
// user on a read-only root file system, psql through it to the test database, its HEALTHCHECK healthy,
// SIGTERM draining an open query to exit 0, and a second container in its network namespace (the sidecar
// shape) reaching it on 127.0.0.1. Skipped, saying why, only where podman cannot run at all, and never
// in CI (.ci/run installs podman and runc).
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { startTestDb } from './support/testdb.js';
import { closedPort, runPg } from './support/proxy.js';
import { BASE, buildImage, imageSize, imageTestBound, podmanEnv, podmanUnavailable, run, STEP_MS, standInBase } from './support/image.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const env = podmanEnv();
const unavailable = await podmanUnavailable(env);
if (unavailable && process.env.CI) throw new Error(`${unavailable} (CI installs podman and runc: see .ci/run)`);
// Each step has its own bound (STEP_MS); the file's limit is theirs added up, for the steps left to run
// (a cached base skips its own), not the suite's 120 s for every file.
const bound = unavailable ? 0 : await imageTestBound(env);
if (bound) t.setTimeout(bound);

t.test('the image, built and run', { skip: unavailable ?? false, ...(bound ? { timeout: bound } : {}) }, async (t) => {
  const db = await startTestDb();
  t.teardown(() => db.destroy());
  const base = await standInBase(env);
  const tag = 'localhost/pg-iam-proxy:test';
  await buildImage(env, base, tag, root);
  const size = await imageSize(env, tag);
  const added = size - (await imageSize(env, BASE));
  t.comment(`image ${(size / 1e6).toFixed(1)} MB, of which ${(added / 1e6).toFixed(1)} MB on top of its Node base`);
  t.ok(added < 40e6, `what the image adds to its base stays small (production dependencies only): ${(added / 1e6).toFixed(1)} MB`);

  const port = await closedPort();
  const http = await closedPort();
  const name = `pg-iam-proxy-test-${process.pid}`;
  const started = await run(
    'podman',
    [
      'run',
      '-d',
      '--name',
      name,
      '--read-only',
      '--network',
      'host', // the test database listens on this machine's loopback
      '-v',
      `${db.caFile}:/ca.pem:ro`,
      '-e',
      `AWS_ACCESS_KEY_ID=${db.key.accessKeyId}`,
      '-e',
      `AWS_SECRET_ACCESS_KEY=${db.key.secretAccessKey}`,
      '-e',
      `PG_IAM_PROXY_HTTP=127.0.0.1:${http}`,
      '--health-interval',
      'disable', // run by hand below, once: no systemd timers here
      tag,
      `${db.endpoint}:${db.port}`,
      '--connect-to',
      `127.0.0.1:${db.port}`,
      '--listen',
      `127.0.0.1:${port}`,
      '--ca-file',
      '/ca.pem',
      '--log-format',
      'json',
      '--shutdown-grace',
      '20',
    ],
    { env },
  );
  t.equal(started.code, 0, started.code === 0 ? 'started, detached' : started.stderr);
  t.teardown(() => run('podman', ['rm', '-f', name], { env }));
  const libpq = { PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'iam_user', PGDATABASE: 'orders' };
  // Ready when it answers: the first psql waits for the listener (libpq retries nothing, so poll the log).
  const deadline = Date.now() + STEP_MS.container;
  for (;;) {
    if (Date.now() > deadline) {
      t.fail(`the container did not say "listening" within ${STEP_MS.container / 1000} s`);
      return;
    }
    const logs = await run('podman', ['logs', name], { env });
    if (/"msg":"listening"/.test(logs.stdout + logs.stderr)) break;
    if ((await run('podman', ['inspect', '--format', '{{.State.Running}}', name], { env })).stdout.trim() !== 'true') {
      t.fail(`the container stopped: ${logs.stdout}${logs.stderr}`);
      return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], libpq);
  t.equal(r.stdout.trim(), 'iam_user', `psql through the container: ${r.stderr}`);

  const inspect = (format: string) => run('podman', ['inspect', '--format', format, name], { env }).then((x) => x.stdout.trim());
  t.equal(await inspect('{{.Config.User}}'), 'node', 'runs as the node user');
  t.equal(await inspect('{{.HostConfig.ReadonlyRootfs}}'), 'true', 'on a read-only root file system');
  const uid = await run('podman', ['exec', name, 'node', '-p', 'process.getuid()'], { env });
  t.equal(uid.stdout.trim(), '1000', 'uid 1000, not root');
  const health = await run('podman', ['healthcheck', 'run', name], { env });
  t.equal(health.code, 0, `HEALTHCHECK healthy: ${health.stdout}${health.stderr}`);
  // The clouds' SDKs load from the pruned node_modules (the build removes @azure/msal-browser and source maps).
  const sdks = await run(
    'podman',
    [
      'exec',
      '-w',
      '/app',
      name,
      'node',
      '--input-type=module',
      '-e',
      "await import('@azure/identity'); await import('google-auth-library'); console.log('loaded')",
    ],
    { env },
  );
  t.equal(sdks.stdout.trim(), 'loaded', `Azure's and Google's SDKs load in the image: ${sdks.stderr}`);

  // The sidecar shape: another container in this one's network namespace reaches it on 127.0.0.1.
  const probe = `const s=require('net').connect(${port},'127.0.0.1',()=>s.write(Buffer.from([0,0,0,8,4,210,22,47])));s.once('data',d=>{console.log(String.fromCharCode(d[0]));s.destroy()})`;
  const sidecar = await run('podman', ['run', '--rm', '--network', `container:${name}`, '--entrypoint', 'node', tag, '-e', probe], {
    env,
  });
  t.equal(sidecar.code, 0, sidecar.code === 0 ? 'a second container in its network namespace' : sidecar.stderr);
  t.match(sidecar.stdout.trim(), /^[SN]$/, 'it answered an SSLRequest from the next container');

  // SIGTERM with a query open: the query finishes, the container exits 0 within the grace period.
  const query = spawn('psql', ['-X', '-At', '-c', 'SELECT pg_sleep(1.5), 42'], { env: { ...process.env, ...libpq } });
  let out = '';
  query.stdout.on('data', (d) => (out += d));
  while ((await db.admin("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(1.5)%' AND state = 'active'")) !== '1') {
    await new Promise((r) => setTimeout(r, 50));
  }
  const stopped = run('podman', ['stop', '-t', '30', name], { env, timeout: STEP_MS.container });
  const [code] = await once(query, 'exit');
  t.equal(code, 0, 'the open query finished');
  t.match(out, /\|42/);
  t.equal((await stopped).code, 0);
  t.equal(await inspect('{{.State.ExitCode}}'), '0', 'exit 0 after the drain');
  const logs = await run('podman', ['logs', name], { env });
  t.notMatch(logs.stdout + logs.stderr, new RegExp(db.key.secretAccessKey), 'no secret in its logs');
});
