// The npm package as a user gets it: `npm pack` makes the tarball the registry would serve, `npm install
// -g` puts it into an empty prefix (production dependencies only, no build step, no TypeScript), and
// the `pg-iam-proxy` on that prefix's PATH logs a client in to the test database.
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { cleanAwsEnv, serveArgs, startCli } from './support/cli.js';
import { runPg } from './support/proxy.js';
import { startTestDb } from './support/testdb.js';
import { startSts } from './support/aws/sts.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  scripts: Record<string, string>;
  files: string[];
  engines: { node: string };
  license: string;
  devDependencies: Record<string, string>;
};

t.test('package.json: nothing runs at install, the engines are the lines the dependencies allow', async (t) => {
  for (const hook of ['preinstall', 'install', 'postinstall', 'prepare'])
    t.notOk(pkg.scripts[hook], `no ${hook} script: a registry install has no TypeScript`);
  t.match(pkg.scripts.prepack, /tsc/, 'the tarball is built when it is made');
  t.equal(pkg.license, 'Apache-2.0');
  t.match(readFileSync(join(root, 'LICENSE'), 'utf8'), /Apache License\s+Version 2\.0, January 2004/);
  // yargs 18, the strictest dependency, runs on ^20.19.0 || ^22.12.0 || >=23: the package claims no more.
  t.equal(pkg.engines.node, '^20.19.0 || ^22.12.0 || >=24');
});

t.test('npm pack, npm install -g into an empty prefix, log in through the installed command', async (t) => {
  const db = await startTestDb();
  t.teardown(() => db.destroy());
  const sts = await startSts();
  t.teardown(() => sts.close());
  const scratch = mkdtempSync(join(tmpdir(), 'pg-iam-proxy-pack-'));
  // build/ is the suite's (npm test builds first); --ignore-scripts so that packing does not rebuild it
  // under the other test files running now. prepack builds it when a person runs npm pack.
  const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', scratch], { cwd: root });
  const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const files = info!.files.map((f) => f.path).sort();
  t.ok(files.includes('bin/pg-iam-proxy.js') && files.includes('build/src/cli.js'), 'the launcher and the compiled CLI');
  t.ok(files.includes('README.md') && files.includes('LICENSE') && files.includes('package.json'), 'README and LICENSE inside');
  t.same(
    files.filter((f) => !/^(bin\/[^/]+\.js|build\/src\/.+\.js|README\.md|LICENSE|package\.json)$/.test(f)),
    [],
    'nothing else: no tests, no TypeScript sources, no source maps',
  );

  // An empty prefix, npm run outside the repository (no .npmrc or lockfile of ours): dependencies come
  // from the npm cache, or the registry when the cache lacks them.
  const prefix = join(scratch, 'prefix');
  const home = join(scratch, 'home');
  const installed = await run(
    'npm',
    ['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(scratch, info!.filename)],
    { cwd: scratch, env: { ...process.env, npm_config_update_notifier: 'false' }, maxBuffer: 16 << 20 },
  );
  t.match(installed.stdout, /added \d+ packages/, installed.stderr);
  const modules = join(prefix, 'lib', 'node_modules');
  t.same(readdirSync(modules), ['pg-iam-proxy'], 'one package in the global root');
  const nested = join(modules, 'pg-iam-proxy', 'node_modules');
  for (const dev of Object.keys(pkg.devDependencies)) t.notOk(existsSync(join(nested, dev)), `no dev dependency ${dev}`);

  const env = cleanAwsEnv(home, {
    PATH: `${join(prefix, 'bin')}${delimiter}${process.env.PATH}`,
    AWS_ACCESS_KEY_ID: db.key.accessKeyId,
    AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey,
    AWS_ENDPOINT_URL_STS: sts.url,
  });
  const version = await run('pg-iam-proxy', ['--version'], { env });
  t.equal(version.stdout.trim(), pkg.version, 'pg-iam-proxy is on the prefix PATH');
  const cli = await startCli(serveArgs(db, '--http', '127.0.0.1:0'), env, 'pg-iam-proxy');
  const r = await runPg('psql', ['-X', '-At', '-c', 'SELECT current_user'], {
    PGHOST: '127.0.0.1',
    PGPORT: String(cli.port),
    PGUSER: 'iam_user',
    PGDATABASE: 'orders',
  });
  t.equal(r.stdout.trim(), 'iam_user', `logged in through the installed command: ${r.stderr}`);
  // --http loads the metrics and the HTTP listener: lazily loaded modules are in the package too.
  await cli.line((l) => l.msg === 'health and metrics listening');
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});
