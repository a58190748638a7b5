// The HTTP listener faces strangers (in Kubernetes, every pod can reach it): silent, slow and idle
// connections are closed within the configured time, never more than the cap are open at once, and
// /readyz tells an unauthenticated reader whether things are ready, not who signs.
import t from 'tap';
import { once } from 'node:events';
import { request, type IncomingMessage } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Identities } from '../src/aws/identity.js';
import { createLogger } from '../src/log.js';
import { HTTP_LIMITS, OpsServer, type OpsOptions } from '../src/ops/http.js';
import { Metrics } from '../src/ops/metrics.js';
import type { Engine } from '../src/proxy/engine.js';
import { cleanAwsEnv, startCli } from './support/cli.js';
import { closedPort } from './support/proxy.js';
import { socketStandIn } from './support/socket-stand-in.js';
import type { Server } from 'node:http';

const ACCOUNT = '123456789012';
const ROLE_ARN = `arn:aws:iam::${ACCOUNT}:role/orders-db-writer`;
const PROFILE = 'payments-prod';
const ENDPOINT = 'orders.cluster-abc123.us-east-1.rds.amazonaws.com:5432';
const KEY = {
  accessKeyId: 'AKIAOPSHTTPTESTKEY01',
  secretAccessKey: 'ops-http-test-secret-key-never-shown',
  sessionToken: 'ops-http-test-session-token',
};
/** Long enough never to fire in a test that is about something else. */
const NEVER = 60_000;

interface Started extends AsyncDisposable {
  readonly ops: OpsServer;
  readonly port: number;
  readonly logs: Array<Record<string, unknown>>;
  readonly rawLogs: () => string;
}

/**
 * An OpsServer in-process: a real Identities (a role assumed from a profile, credentials from a stand-in
 * provider, so no network), real Metrics fed by it, and a proxy with one instance reached just now.
 */
async function startOps(options: Partial<OpsOptions> = {}): Promise<Started> {
  let raw = '';
  const log = createLogger(
    { level: 'info', format: 'json' },
    new Writable({ write: (chunk, _enc, done) => ((raw += String(chunk)), done()) }),
  );
  const metrics = new Metrics();
  const identities = new Identities({
    log,
    onRefresh: metrics.credentialsRefreshed,
    providerFor: () => ({
      provider: async () => ({ ...KEY, expiration: new Date(Date.now() + 3_600_000) }),
      source: () => 'static credentials',
    }),
  });
  await identities.for({ profile: PROFILE, roleArn: ROLE_ARN }, 'us-east-1').holder.get();
  const proxy = { instances: [{ name: ENDPOINT, lastReachableAt: Date.now(), probe: async () => undefined }] } as unknown as Engine;
  const ops = new OpsServer({ proxy, identities, metrics, log, headersTimeoutMs: NEVER, idleTimeoutMs: NEVER, ...options });
  const { port } = await ops.listen({ host: '127.0.0.1', port: 0 });
  return {
    ops,
    port,
    async [Symbol.asyncDispose]() {
      identities.close();
      await ops.close();
    },
    get logs() {
      return raw
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Record<string, unknown>);
    },
    rawLogs: () => raw,
  };
}

/** The end of one chunked response (Node chunks what it answers with writeHead + end). */
const ANSWER = /0\r\n\r\n/g;
const answers = (c: Raw) => c.heard().match(ANSWER)?.length ?? 0;

/** A raw client: what it has heard so far, and a promise of its close. */
interface Raw {
  readonly socket: Socket;
  readonly heard: () => string;
  readonly closed: Promise<unknown>;
  /** Resolves once this many complete answers have been heard. */
  hear(count: number): Promise<string>;
}

async function open(port: number): Promise<Raw> {
  const socket = connect({ host: '127.0.0.1', port });
  let heard = '';
  const waiters: Array<() => void> = [];
  // Read everything: a socket nobody reads never sees the server's FIN, so never emits 'close'.
  socket.on('data', (d: Buffer) => {
    heard += d.toString('latin1');
    for (const w of waiters.splice(0)) w();
  });
  socket.on('error', () => undefined);
  const closed = once(socket, 'close');
  await once(socket, 'connect');
  const hear = async (count: number) => {
    while ((heard.match(ANSWER)?.length ?? 0) < count) {
      if (socket.destroyed) throw new Error(`closed before answer ${count}; heard ${JSON.stringify(heard)}`);
      await Promise.race([new Promise<void>((resolve) => waiters.push(resolve)), closed]);
    }
    return heard;
  };
  return { socket, heard: () => heard, closed, hear };
}

const GET = (path: string, connection = 'keep-alive') => `GET ${path} HTTP/1.1\r\nHost: ops\r\nConnection: ${connection}\r\n\r\n`;

/** One request on its own connection (Node's client, no agent: nothing kept open after). */
async function get(port: number, path: string): Promise<{ status: number; body: string; head: string }> {
  const req = request({ host: '127.0.0.1', port, path, agent: false });
  req.end();
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  let body = '';
  for await (const chunk of res) body += String(chunk);
  return { status: res.statusCode ?? 0, body, head: JSON.stringify(res.headers) };
}

t.test('a connection that never sends a byte is closed after the idle timeout, silently', async (t) => {
  await using ops = await startOps({ idleTimeoutMs: 200 });
  const { port } = ops;
  const started = Date.now();
  const silent = await open(port);
  await silent.closed;
  t.equal(silent.heard(), '', 'closed by the idle timer (the headers timeout, set to a minute, would have said 408)');
  t.ok(Date.now() - started < NEVER, 'within the idle timeout, not the headers timeout');
});

t.test('half a request header, then nothing: 408 after the headers timeout', async (t) => {
  await using ops = await startOps({ headersTimeoutMs: 300 });
  const { port } = ops;
  const half = await open(port);
  half.socket.write('GET /healthz HTTP/1.1\r\nHo');
  await half.closed;
  t.match(half.heard(), /^HTTP\/1\.1 408 Request Timeout\r\n/);
});

t.test('headers sent a line at a time: the idle timer never fires, the headers timeout does', async (t) => {
  await using ops = await startOps({ headersTimeoutMs: 300 });
  const { port } = ops;
  const slow = await open(port);
  slow.socket.write('GET /healthz HTTP/1.1\r\n');
  // The trickle is the attack, not a wait: a header line every 50 ms, for as long as the server listens.
  const trickle = setInterval(() => slow.socket.writable && slow.socket.write('X-Slow: 1\r\n'), 50);
  t.teardown(() => clearInterval(trickle));
  await slow.closed;
  clearInterval(trickle);
  t.match(slow.heard(), /^HTTP\/1\.1 408 Request Timeout\r\n/);
});

t.test('a keep-alive connection is kept between requests, then closed after the idle timeout', async (t) => {
  await using ops = await startOps({ idleTimeoutMs: 200 });
  const { port } = ops;
  const c = await open(port);
  c.socket.write(GET('/healthz'));
  await c.hear(1);
  t.match(c.heard(), /^HTTP\/1\.1 200 OK\r\n/);
  t.match(c.heard(), /\r\nConnection: keep-alive\r\n/i);
  c.socket.write(GET('/healthz'));
  await c.hear(2);
  await c.closed;
  t.equal(answers(c), 2, 'two answers on one connection, then the close');
  t.notMatch(c.heard(), /408/);
});

t.test('at the cap, the connection idle longest makes room: /healthz answers on a fresh one', async (t) => {
  await using ops = await startOps({ maxConnections: 3 });
  const { port } = ops;
  // Each holder asks once: its answer proves the server has it, in this order. Then they idle.
  const holders: Raw[] = [];
  for (let i = 0; i < 3; i++) {
    const holder = await open(port);
    holder.socket.write(GET('/healthz'));
    await holder.hear(1);
    holders.push(holder);
  }
  const fourth = await open(port);
  await holders[0]!.closed;
  t.pass('the first holder was closed at once (the idle timeout is a minute)');
  holders[1]!.socket.write(GET('/healthz'));
  await holders[1]!.hear(2);
  t.pass('the second is still served');
  // The cap is full of idle connections (holders 1 and 2, the fourth): a probe still gets in.
  t.match(await get(port, '/healthz'), { status: 200, body: 'ok\n' }, 'a probe gets in while the cap is full of idle connections');
  await holders[2]!.closed;
  t.pass('the connection that had asked least recently made room');
  fourth.socket.write(GET('/healthz'));
  await fourth.hear(1);
  holders[1]!.socket.write(GET('/healthz'));
  await holders[1]!.hear(3);
  t.pass('the others are still served');
  const warnings = ops.logs.filter((l) => /HTTP connections at the cap \(3\): closing the one idle longest/.test(String(l.msg)));
  t.equal(warnings.length, 1, 'said once, not once per connection');
  fourth.socket.destroy();
  holders[1]!.socket.destroy();
});

t.test('at the cap with every connection being answered, a newcomer is closed at once', async (t) => {
  // /metrics answers when the test says so: three requests in flight fill the cap.
  let asked = 0;
  let everyoneAsked!: () => void;
  const allAsking = new Promise<void>((resolve) => (everyoneAsked = resolve));
  let answer!: (text: string) => void;
  const answered = new Promise<string>((resolve) => (answer = resolve));
  const metrics = {
    registry: {
      contentType: 'text/plain; version=0.0.4',
      metrics: () => {
        if (++asked === 3) everyoneAsked();
        return answered;
      },
    },
  } as unknown as Metrics;
  await using ops = await startOps({ maxConnections: 3, metrics });
  const { port } = ops;
  const scrapers = await Promise.all([0, 1, 2].map(() => open(port)));
  for (const s of scrapers) s.socket.write(GET('/metrics', 'close'));
  await allAsking;
  const started = Date.now();
  const late = await open(port);
  await late.closed;
  t.equal(late.heard(), '', 'closed without a word');
  t.ok(Date.now() - started < NEVER, 'at once, not by a timeout');
  answer('pg_iam_proxy_up 1\n');
  for (const s of scrapers) {
    await s.closed;
    t.match(s.heard(), /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\npg_iam_proxy_up 1\n\r\n0\r\n\r\n$/, 'the requests in flight were answered');
  }
  t.ok(ops.logs.some((l) => /HTTP connections at the cap \(3\): refusing a new one/.test(String(l.msg))));
  t.match(await get(port, '/healthz'), { status: 200 }, 'room again once they are done');
});

t.test('/readyz says ready or not per identity by number; the log says which number is which', async (t) => {
  await using ops = await startOps();
  const { port, rawLogs } = ops;
  const ready = await get(port, '/readyz');
  t.equal(ready.status, 200, ready.body);
  t.same(JSON.parse(ready.body), {
    ready: true,
    draining: false,
    credentials: [{ identity: '#1', ok: true }],
    instances: [{ instance: ENDPOINT, ok: true, lastReachedSecondsAgo: 0 }],
  });
  const unseen = { 'the role ARN': ROLE_ARN, 'the account': ACCOUNT, 'the role name': 'orders-db-writer', 'the profile': PROFILE, ...KEY };
  for (const [what, text] of Object.entries(unseen)) t.notOk(ready.body.includes(text), `/readyz does not show ${what}`);
  const listening = ops.logs.find((l) => l.msg === 'health and metrics listening');
  t.same(listening?.identities, { '#1': `role ${ROLE_ARN} assumed from profile ${PROFILE}` }, 'operators read the mapping in the log');
  t.notOk(rawLogs().includes(KEY.secretAccessKey) || rawLogs().includes(KEY.sessionToken), 'no secret in the logs');
  const healthz = await get(port, '/healthz');
  t.equal(healthz.body, 'ok\n');
  t.notOk(healthz.head.includes(ROLE_ARN));
});

t.test('/metrics: what an unauthenticated reader sees', async (t) => {
  await using ops = await startOps();
  const { status, body } = await get(ops.port, '/metrics');
  t.equal(status, 200);
  t.match(body, /^pg_iam_proxy_credential_refreshes_total\{identity="[^"]+"\} 1$/m, 'one fetch, counted');
  for (const [what, text] of Object.entries(KEY)) t.notOk(body.includes(text), `/metrics does not show ${what}`);
  t.match(body, /^pg_iam_proxy_credential_refreshes_total\{identity="#1"\} 1$/m, 'the identity by number, as /readyz');
  const who = { 'the role ARN': ROLE_ARN, 'the account': ACCOUNT, 'the profile': PROFILE };
  for (const [what, text] of Object.entries(who)) t.notOk(body.includes(text), `/metrics does not show ${what}`);
});

t.test('the defaults are a few seconds and a few dozen connections', async (t) => {
  t.same(HTTP_LIMITS, { headersTimeoutMs: 5_000, idleTimeoutMs: 5_000, maxConnections: 32 });
});

t.test('through the CLI: the HTTP listener closes an idle connection, /readyz names no role', async (t) => {
  const home = mkdtempSync(join(tmpdir(), 'ops-http-'));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const args = [ENDPOINT, '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', '--connect-to', `127.0.0.1:${await closedPort()}`];
  const cli = await startCli([...args, '--profile', PROFILE, '--role-arn', ROLE_ARN, '--log-format', 'json'], cleanAwsEnv(home));
  t.teardown(() => void cli.child.kill('SIGKILL'));
  const listening = await cli.line((l) => l.msg === 'health and metrics listening');
  const port = Number(String(listening.http).split(':').at(-1));
  t.same(listening.identities, { '#1': `role ${ROLE_ARN} assumed from profile ${PROFILE}` });
  const silent = await open(port);
  const readyz = await get(port, '/readyz');
  t.equal(readyz.status, 503, 'no credentials in this environment');
  t.match(JSON.parse(readyz.body), { ready: false, credentials: [{ identity: '#1', ok: false }] });
  t.notOk(readyz.body.includes(ROLE_ARN) || readyz.body.includes(PROFILE) || readyz.body.includes(ACCOUNT));
  const started = Date.now();
  await silent.closed;
  const took = Date.now() - started;
  // Loose on purpose (a loaded machine): the point is the short defaults, not Node's 60 s for headers.
  t.ok(
    took < 3 * HTTP_LIMITS.idleTimeoutMs,
    `closed after ${took} ms (defaults: ${HTTP_LIMITS.idleTimeoutMs} ms idle, ${HTTP_LIMITS.headersTimeoutMs} ms for headers)`,
  );
  t.match(await get(port, '/healthz'), { status: 200, body: 'ok\n' }, 'and still serves');
  cli.child.kill('SIGTERM');
  t.equal(await cli.exit, 0);
});

/**
 * One request on a connection injected into the listener from a peer at `address` (Node's HTTP server
 * takes any Duplex as a connection): how a peer beyond loopback looks, with no traffic off the machine.
 */
async function askAs(ops: OpsServer, address: string, request: string): Promise<string> {
  const { socket, written } = socketStandIn();
  Object.defineProperty(socket, 'remoteAddress', { value: address });
  (ops as unknown as { server: Server }).server.emit('connection', socket);
  socket.push(request);
  socket.push(null);
  await once(socket, 'finish');
  return written().toString('latin1');
}

t.test('POST /quitquitquit: loopback peers only, POST only', async (t) => {
  let quits = 0;
  await using ops = await startOps({ quit: () => void quits++ });
  const post = 'POST /quitquitquit HTTP/1.1\r\nHost: pod\r\nContent-Length: 0\r\n\r\n';
  t.match(
    await askAs(ops.ops, '10.1.2.3', post),
    /^HTTP\/1\.1 403 .*only a loopback peer may stop the proxy/s,
    'a peer on the pod network',
  );
  t.match(await askAs(ops.ops, '::ffff:10.1.2.3', post), /^HTTP\/1\.1 403 /, 'the same as an IPv4-mapped address');
  t.match(await askAs(ops.ops, 'fd00::7', post), /^HTTP\/1\.1 403 /);
  t.equal(quits, 0, 'nobody beyond loopback stopped it');
  t.match(
    ops.logs.find((l) => String(l.msg).startsWith('POST /quitquitquit refused')),
    { peer: '10.1.2.3', level: 40 },
    'the refusal is logged with the peer',
  );
  const get = await fetch(`http://127.0.0.1:${ops.port}/quitquitquit`);
  t.match(
    { status: get.status, allow: get.headers.get('allow') },
    { status: 405, allow: 'POST' },
    'a GET (a crawler, a probe) does not stop it',
  );
  t.equal(quits, 0);
  const ok = await fetch(`http://127.0.0.1:${ops.port}/quitquitquit`, { method: 'POST' });
  t.match({ status: ok.status, text: await ok.text() }, { status: 200, text: 'shutting down\n' });
  t.equal(quits, 1, 'a loopback peer did');
  t.match(await askAs(ops.ops, '::1', post), /^HTTP\/1\.1 200 /, 'IPv6 loopback too');
  t.equal(quits, 2);
});

t.test('without a shutdown to start, /quitquitquit is not there; /startup follows the credentials once', async (t) => {
  await using ops = await startOps();
  t.equal((await fetch(`http://127.0.0.1:${ops.port}/quitquitquit`, { method: 'POST' })).status, 405, 'POST elsewhere: 405 as before');
  t.equal((await fetch(`http://127.0.0.1:${ops.port}/quitquitquit`)).status, 404);
  const startup = await fetch(`http://127.0.0.1:${ops.port}/startup`);
  t.match({ status: startup.status, text: await startup.text() }, { status: 200, text: 'started\n' }, 'credentials in hand');
  ops.ops.drain();
  t.equal((await fetch(`http://127.0.0.1:${ops.port}/startup`)).status, 200, 'started once is started: a drain does not undo it');
  t.equal((await fetch(`http://127.0.0.1:${ops.port}/readyz`)).status, 503, 'while /readyz says draining');
});
