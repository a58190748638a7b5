// doctor in process, for the findings the CLI tests cannot stage: a skewed clock, a region that does
// not match the endpoint, keys STS refuses, a server without TLS, a dial name that resolves; and the
// terminal rendering.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Identities } from '../src/aws/identity.js';
import { formatReport, runDoctor, type DoctorOptions } from '../src/commands/doctor.js';
import { resolveInstance, type InstanceInput } from '../src/config.js';
import { isolateAwsEnv } from './support/aws/files.js';
import { startSts } from './support/aws/sts.js';
import { startTestDb } from './support/testdb.js';

const db = await startTestDb();
const sts = await startSts();
const dir = mkdtempSync(join(tmpdir(), 'doctor-'));
const restore = isolateAwsEnv(dir, {
  AWS_ACCESS_KEY_ID: db.key.accessKeyId,
  AWS_SECRET_ACCESS_KEY: db.key.secretAccessKey,
  AWS_ENDPOINT_URL_STS: sts.url,
  AWS_EC2_METADATA_DISABLED: 'true',
});
t.teardown(async () => {
  restore();
  await sts.close();
  await db.destroy();
  rmSync(dir, { recursive: true, force: true });
});

async function check(input: Partial<InstanceInput>, options: Partial<DoctorOptions> = {}) {
  const { instance } = resolveInstance({
    endpoint: `${db.endpoint}:${db.port}`,
    connectTo: `127.0.0.1:${db.port}`,
    caFile: db.caFile,
    listen: null,
    ...input,
  });
  const identities = new Identities();
  try {
    const report = await runDoctor(instance, {
      user: 'iam_user',
      database: 'orders',
      connectTimeoutMs: 5_000,
      identities,
      configWarnings: [],
      regionSource: 'endpoint',
      ...options,
    });
    return { report, byId: Object.fromEntries(report.checks.map((c) => [c.id, c])) };
  } finally {
    identities.close();
  }
}

t.test('the clock against STS: ahead by minutes is a warning, past five a failure', async (t) => {
  const ahead2 = await check({}, { now: () => Date.now() + 120_000 });
  t.match(ahead2.byId.clock, { status: 'warn', found: /ahead of STS's/ });
  t.equal(ahead2.report.ok, true, 'the login still decides');
  const behind10 = await check({}, { now: () => Date.now() - 600_000 });
  t.match(behind10.byId.clock, { status: 'fail', found: /behind STS's/, fix: /5 minutes/ });
  t.equal(behind10.byId.token!.status, 'skip');
});

t.test("a region that is not the endpoint's: a warning, then the login says what failed", async (t) => {
  await db.trustKey(db.key);
  const { report, byId } = await check({ region: 'us-west-2' }, { regionSource: 'flag' });
  t.match(byId.endpoint, {
    status: 'warn',
    found: /region us-west-2 \(from --region\), but the endpoint is in us-east-1/,
    fix: /--region us-east-1/,
  });
  t.match(byId.login, { status: 'fail', fix: /GRANT rds_iam/ });
  t.equal(report.ok, false);
});

t.test('keys STS refuses fail the first check', async (t) => {
  const strict = await startSts({ knownAccessKeyIds: ['AKIANOTTHEKEY0000000'] });
  t.teardown(() => strict.close());
  process.env.AWS_ENDPOINT_URL_STS = strict.url;
  t.teardown(() => void (process.env.AWS_ENDPOINT_URL_STS = sts.url));
  const { byId } = await check({});
  t.match(byId.credentials, { status: 'fail', found: /STS refused the credentials/, fix: /renew them/ });
});

t.test('a dial address by name, and servers that do not speak TLS', async (t) => {
  const unknown = await check({ connectTo: `db.nonexistent.invalid:${db.port}` });
  t.match(unknown.byId.dns, { status: 'fail', found: /db\.nonexistent\.invalid \(--connect-to\) does not resolve: ENOTFOUND/ });
  const named = await check({ connectTo: `localhost:${db.port}` });
  t.match(named.byId.dns, { status: 'pass', found: /localhost \(--connect-to\) resolves to/ });

  const answers = async (reply: Buffer | null) => {
    const server: Server = createServer((socket) => socket.once('data', () => (reply ? socket.end(reply) : socket.destroy())));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      return await check({ connectTo: `127.0.0.1:${(server.address() as { port: number }).port}` });
    } finally {
      server.close();
    }
  };
  t.match((await answers(Buffer.from('N'))).byId.tls, {
    status: 'fail',
    found: /answered the SSLRequest with 'N' \(no TLS\)/,
    fix: /never falls back to plaintext/,
  });
  t.match((await answers(Buffer.from('HTTP/1.1 400'))).byId.tls, { status: 'fail', found: /with "HTTP\/1.1 400"/ });
  t.match((await answers(null)).byId.tls, { status: 'fail', found: /with no answer/ });
});

t.test('the terminal rendering: colour on a TTY, each fix under its check', async (t) => {
  const { report } = await check({ connectTo: '127.0.0.1:9' });
  const text = formatReport(report, true);
  t.match(text, /\x1b\[32mPASS\x1b\[0m {2}AWS credentials and identity/);
  t.match(text, /\x1b\[31mFAIL\x1b\[0m {2}TCP connection\n {6}could not connect to 127\.0\.0\.1:9: ECONNREFUSED\n {6}fix: /);
  t.match(text, /\x1b\[2mSKIP\x1b\[0m {2}Login/);
  t.match(text, /Stopped at: TCP connection\./);
  t.match(formatReport(report, false), /via 127\.0\.0\.1:9/);
});
