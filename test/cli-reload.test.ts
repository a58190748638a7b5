// SIGHUP reloads --config, through the real CLI and the test database: an instance added starts
// listening, a changed one gives new sessions its new settings, a removed one drains, the sessions of the
// others are untouched; a file that does not validate changes nothing and is logged with its line; the
// reloads are counted.
import t from 'tap';
import pg from 'pg';
import { chmodSync, copyFileSync, mkdtempSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startTestDb } from './support/testdb.js';
import { closedPort } from './support/proxy.js';
import { cleanAwsEnv, startCli } from './support/cli.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const env = cleanAwsEnv(db.dir, { AWS_ACCESS_KEY_ID: db.key.accessKeyId, AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey });
const config = join(db.dir, 'reload.yaml');
const instance = (port: number, extra: string[] = []) => [
  `  - endpoint: ${db.endpoint}:${db.port}`,
  `    connectTo: 127.0.0.1:${db.port}`,
  `    caFile: ${db.caFile}`,
  `    listen: 127.0.0.1:${port}`,
  ...extra.map((line) => `    ${line}`),
];
const write = (...instances: string[][]) =>
  writeFileSync(config, ['log: { format: json }', 'instances:', ...instances.flat(), ''].join('\n'));
const client = (port: number) => {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'iam_user', database: 'orders' });
  c.on('error', () => undefined);
  return c;
};
const refused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });

t.test('SIGHUP: added, changed, removed and untouched instances; a bad file changes nothing', async (t) => {
  const [first, second, http] = [await closedPort(), await closedPort(), await closedPort()];
  write(instance(first));
  const cli = await startCli(['--config', config, '--http', `127.0.0.1:${http}`], env);
  t.teardown(() => void cli.child.kill('SIGKILL'));
  let reloads = 0;
  const reloaded = async () => {
    reloads++;
    let seen = 0;
    return cli.line((l) => (l.msg === 'configuration reloaded' || /^configuration not reloaded/.test(String(l.msg))) && ++seen === reloads);
  };
  const open = client(first);
  await open.connect();
  const pid = (await open.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;

  // Added: a second listener, same database, only for iam_user.
  write(instance(first), instance(second, ['allowUsers: [iam_user]']));
  cli.child.kill('SIGHUP');
  t.match(await reloaded(), { msg: 'configuration reloaded', added: [/#2$/], unchanged: [`${db.endpoint}:${db.port}`] });
  const onSecond = client(second);
  await onSecond.connect();
  t.equal((await onSecond.query('SELECT 1 AS one')).rows[0].one, 1, 'the added instance serves');
  await onSecond.end();

  // Changed: the first instance now signs only for a user nobody is; its open session goes on.
  write(instance(first, ['allowUsers: [nobody]']), instance(second, ['allowUsers: [iam_user]']));
  cli.child.kill('SIGHUP');
  t.match(await reloaded(), { changed: [`${db.endpoint}:${db.port}`], unchanged: [/#2$/] });
  const err = await client(first)
    .connect()
    .then(
      () => undefined,
      (e: pg.DatabaseError) => e,
    );
  t.match(err, { code: '28000', message: /does not sign for user "iam_user"/ }, 'new sessions get the new settings');
  t.equal((await open.query('SELECT pg_backend_pid() AS pid')).rows[0].pid, pid, 'the open session is untouched');

  // A file that does not validate: logged with its line and key, nothing changes.
  writeFileSync(config, `instances:\n  - endpoint: ${db.endpoint}\n    listen: 127.0.0.1:${first}\n    poolSize: many\n`);
  cli.child.kill('SIGHUP');
  t.match(await reloaded(), { msg: /^configuration not reloaded, nothing changed: .*reload\.yaml:4: instances\[0\]\.poolSize/ });
  t.equal((await open.query('SELECT 1 AS one')).rows[0].one, 1, 'still serving');

  // A file that validates but names a CA bundle that cannot be read: nothing changes either.
  write(
    instance(first, ['allowUsers: [nobody]']).map((l) => l.replace(/caFile: .*/, 'caFile: /nonexistent/ca.pem')),
    instance(second),
  );
  cli.child.kill('SIGHUP');
  t.match(await reloaded(), { msg: /^configuration not reloaded, nothing changed: .*\/nonexistent\/ca\.pem/ });
  const still = client(second);
  await still.connect();
  t.equal((await still.query('SELECT 1 AS one')).rows[0].one, 1, 'the second instance kept its settings');
  await still.end();

  // Removed: the second instance stops accepting (no sessions: at once).
  write(instance(first, ['allowUsers: [nobody]']));
  cli.child.kill('SIGHUP');
  t.match(await reloaded(), { removed: [/#2$/] });
  await cli.line((l) => l.msg === 'stopped listening: removed from the configuration');
  t.ok(await refused(second), 'the removed instance no longer listens');

  const metrics = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
  t.match(metrics, /^pg_iam_proxy_config_reloads_total\{result="ok"\} 3$/m);
  t.match(metrics, /^pg_iam_proxy_config_reloads_total\{result="error"\} 2$/m);
  await open.end();
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});

/** Whether the OS user `nobody` may connect to the unix socket at `path`: 'connected' or the error's code. */
async function connectAsNobody(path: string): Promise<string> {
  const script = `require('net').connect(${JSON.stringify(path)}).on('connect', function () { console.log('connected'); this.destroy(); }).on('error', (e) => console.log(e.code))`;
  const { stdout } = await promisify(execFile)('/usr/sbin/runuser', ['-u', 'nobody', '--', process.execPath, '-e', script]);
  return stdout.trim();
}

t.test('SIGHUP: a narrower unixSocketMode applies to the listening socket', async (t) => {
  const port = await closedPort();
  const dir = mkdtempSync(join(tmpdir(), 'pg-iam-proxy-socket-'));
  chmodSync(dir, 0o755);
  const withMode = (mode: string) => write(instance(port, [`unixSocket: ${dir}`, `unixSocketMode: '${mode}'`]));
  withMode('0666');
  const cli = await startCli(['--config', config], env);
  t.teardown(() => void cli.child.kill('SIGKILL'));
  const path = join(dir, `.s.PGSQL.${port}`);
  t.equal(statSync(path).mode & 0o777, 0o666);
  t.equal(await connectAsNobody(path), 'connected', 'mode 0666: another local user may connect');

  withMode('0600');
  // The n-th reload's outcome (cli.line finds lines already read too).
  const outcomes = () => cli.lines.filter((l) => l.msg === 'configuration reloaded' || /^configuration not reloaded/.test(String(l.msg)));
  let reloads = 0;
  const reloaded = (l: Record<string, unknown>) => outcomes().indexOf(l) === reloads - 1;
  const reload = () => (reloads++, cli.child.kill('SIGHUP'), cli.line(reloaded));
  t.match(await reload(), { msg: 'configuration reloaded', changed: [/./] });
  t.equal((statSync(path).mode & 0o777).toString(8), '600', 'the socket now has the mode the file says');
  t.equal(await connectAsNobody(path), 'EACCES', 'and the other user is refused');
  const c = new pg.Client({ host: dir, port, user: 'iam_user', database: 'orders' });
  await c.connect();
  t.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1, 'the owner still logs in over the socket');
  await c.end();

  // Another file swapped in at the path is never chmod-ed: the reload is refused, saying why.
  const victim = join(dir, 'victim');
  writeFileSync(victim, '', { mode: 0o600 });
  unlinkSync(path);
  symlinkSync(victim, path);
  withMode('0644');
  t.match(await reload(), {
    msg: /^configuration not reloaded, nothing changed: unixSocketMode cannot be changed on .* \(the file there is no longer the socket this process made\): restart pg-iam-proxy/,
  });
  t.equal(statSync(victim).mode & 0o777, 0o600, 'the file the symlink points at is untouched');
  unlinkSync(path);
  t.match(await reload(), { msg: /^configuration not reloaded, nothing changed: unixSocketMode cannot be changed on .* \(ENOENT\)/ });
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});

t.test('SIGHUP: a CA bundle replaced at the same path is read again; one that trusts nothing refuses the reload', async (t) => {
  const port = await closedPort();
  const bundle = join(db.dir, 'reload-ca.pem');
  copyFileSync(db.caFile, bundle);
  write(instance(port).map((l) => l.replace(/caFile: .*/, `caFile: ${bundle}`)));
  const cli = await startCli(['--config', config], env);
  t.teardown(() => void cli.child.kill('SIGKILL'));
  const outcomes = () => cli.lines.filter((l) => l.msg === 'configuration reloaded' || /^configuration not reloaded/.test(String(l.msg)));
  let reloads = 0;
  const reload = () => (reloads++, cli.child.kill('SIGHUP'), cli.line((l) => outcomes().indexOf(l) === reloads - 1));
  const login = async () => {
    const c = client(port);
    try {
      await c.connect();
      await c.end();
      return 'ok';
    } catch (err) {
      return err as pg.DatabaseError;
    }
  };
  t.equal(await login(), 'ok', 'the bundle trusts the server');

  // Replaced by one that does not trust the server: the reload reads it, new logins are refused before any token goes.
  copyFileSync(db.otherCaFile, bundle);
  t.match(await reload(), { msg: 'configuration reloaded', unchanged: [/./] });
  const attempts = (await db.checkerLog()).length;
  t.match(await login(), { code: '08001', message: /certificate is not trusted/ }, 'new connections verify against the new bundle');
  t.equal((await db.checkerLog()).length, attempts, 'no token reached the server');

  // A bundle that trusts nothing: no certificate, or only blocks that are none: the reload is refused, the last bundle stays.
  copyFileSync(db.caFile, bundle);
  t.match(await reload(), { msg: 'configuration reloaded' });
  t.equal(await login(), 'ok', 'trusted again');
  writeFileSync(bundle, '# emptied by mistake\n');
  t.match(await reload(), {
    msg: /^configuration not reloaded, nothing changed: --ca-file .*reload-ca\.pem: no PEM certificate in the file/,
  });
  writeFileSync(bundle, '-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n');
  t.match(await reload(), {
    msg: /^configuration not reloaded, nothing changed: --ca-file .*reload-ca\.pem: certificate 1 of 1 cannot be read/,
  });
  t.equal(await login(), 'ok', 'the bundle read last still serves');
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});
