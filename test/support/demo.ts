// `npm run demo`: the whole chain on one machine, no AWS account needed. A PostgreSQL that demands IAM
// tokens the way RDS does (TLS only, PAM checking SigV4 signatures), the real pg-iam-proxy in front of
// it, a psql query through it, and what happened at each link. Left running until Ctrl-C.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startTestDb } from './testdb.js';
import { runPg } from './proxy.js';

const BIN = fileURLToPath(new URL('../../../bin/pg-iam-proxy.js', import.meta.url));
const say = (text: string) => process.stdout.write(`${text}\n`);

say('Starting a PostgreSQL that authenticates like RDS with IAM (TLS only, tokens checked over PAM)...');
const db = await startTestDb();
say(`  database: ${db.endpoint}:${db.port} (dialled on 127.0.0.1), certificate from a test CA: ${db.caFile}`);
say(`  demo AWS key: ${db.key.accessKeyId} (made up; the database trusts it, no AWS involved)\n`);

const listen = process.env.DEMO_LISTEN ?? '127.0.0.1:0';
const args = [
  `${db.endpoint}:${db.port}`,
  '--connect-to',
  `127.0.0.1:${db.port}`,
  '--ca-file',
  db.caFile,
  '--listen',
  listen,
  '--log-format',
  'json',
];
say(`$ pg-iam-proxy ${args.join(' ')}`);
const env = {
  ...process.env,
  AWS_ACCESS_KEY_ID: db.key.accessKeyId,
  AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey,
  AWS_EC2_METADATA_DISABLED: 'true',
};
const proxy = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'inherit', 'pipe'] });
const port = await new Promise<number>((resolve, reject) => {
  createInterface({ input: proxy.stderr! }).on('line', (line) => {
    const entry = JSON.parse(line) as Record<string, unknown>;
    if (entry.msg === 'listening') resolve(Number(String(entry.listen).split(':').at(-1)));
    if ((entry.level as number) >= 40) process.stderr.write(`${line}\n`);
  });
  proxy.once('exit', (code) => reject(new Error(`pg-iam-proxy exited with ${code}`)));
});
say(`  listening on 127.0.0.1:${port}\n`);

const query =
  'SELECT current_user AS logged_in_as, ssl AS server_side_tls, version AS tls_version FROM pg_stat_ssl WHERE pid = pg_backend_pid()';
say(`$ psql "host=127.0.0.1 port=${port} user=iam_user dbname=orders" -c "${query}"`);
const r = await runPg('psql', ['-X', '-c', query], { PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'iam_user', PGDATABASE: 'orders' });
process.stdout.write(r.stdout + r.stderr);

const login = (await db.checkerLog()).at(-1);
say('What happened:');
say(`  1. psql connected to the proxy in plaintext on loopback, with no password and no TLS setup.`);
say(`  2. The proxy opened TLS to ${db.endpoint} and verified its certificate and name (verify-full).`);
say(`  3. The server asked for a password; the proxy answered with an IAM token signed by ${login?.accessKeyId}`);
say(`     for host ${login?.host}, region ${login?.region}, user "${login?.user}".`);
say(`  4. The database's token checker verified the SigV4 signature: ${login?.ok ? 'login accepted' : `rejected (${login?.reason})`}.`);
say(`\nTry it yourself:  psql "host=127.0.0.1 port=${port} user=iam_user dbname=orders"`);
say('Users: iam_user and "MixedCase_User" are IAM users; pw_user is not (see the error the proxy gives).');
say('Press Ctrl-C to stop.');

const stop = async () => {
  proxy.kill('SIGTERM');
  await once(proxy, 'exit');
  await db.destroy();
  process.exit(0);
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
