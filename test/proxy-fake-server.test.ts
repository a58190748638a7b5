// A server that completes verified TLS with the endpoint's certificate, then misbehaves or asks for
// something other than a token (docs/protocol.md D2-D6). What a real PostgreSQL will not do on demand.
import t from 'tap';
import pg from 'pg';
import { createServer, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestDb } from './support/testdb.js';
import { startProxy } from './support/proxy.js';
import { Bytes, cancelRequest, startupBytes } from './support/bytes.js';
import { WireClient } from './support/wire.js';
import { errorResponse } from '../src/protocol/errors.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const cert = await readFile(join(db.dir, 'server.crt'));
const key = await readFile(join(db.dir, 'server.key'));

/** Accept TLS as the endpoint, read the startup, then hand the socket to `script` (a CancelRequest to `onCancel`). */
async function fakeTlsServer(script: (s: TLSSocket) => void, onCancel?: (s: TLSSocket) => void): Promise<number> {
  const server = createServer((raw: Socket) => {
    raw.once('data', () => {
      raw.write('S');
      const s = new TLSSocket(raw, { isServer: true, cert, key });
      s.on('error', () => undefined);
      s.once('data', (first: Buffer) => (onCancel && first.length >= 8 && first.readUInt32BE(4) === 80877102 ? onCancel(s) : script(s)));
    });
    raw.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise((r) => server.close(r)));
  return (server.address() as { port: number }).port;
}

async function loginThrough(script: (s: TLSSocket) => void) {
  const port = await fakeTlsServer(script);
  const proxy = await startProxy(db, { connectTo: `127.0.0.1:${port}` });
  t.teardown(() => proxy.close());
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  return client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
}

t.test('MD5 requested: the user is not set up for IAM', async (t) => {
  const err = await loginThrough((s) => s.write(new Bytes().int32(5).raw([1, 2, 3, 4]).join('R')));
  t.match(err, {
    code: '28000',
    message: /not set up for IAM authentication: the server asked for MD5 password/,
    hint: /GRANT rds_iam TO "iam_user"/,
  });
});

t.test('an ErrorResponse before authentication is relayed byte for byte', async (t) => {
  const err = await loginThrough((s) =>
    s.end(errorResponse({ severity: 'FATAL', code: '57P03', message: 'the database system is starting up' })),
  );
  t.match(err, { severity: 'FATAL', code: '57P03', message: 'the database system is starting up' });
});

t.test('a server that asks for the password twice is refused', async (t) => {
  const err = await loginThrough((s) => {
    s.write(new Bytes().int32(3).join('R'));
    s.once('data', () => s.write(new Bytes().int32(3).join('R')));
  });
  t.match(err, { code: '08P01', message: /asked for a password twice/ });
});

t.test('an unexpected message before authentication is a protocol violation', async (t) => {
  const err = await loginThrough((s) => s.write(new Bytes().int32(0).join('Z')));
  t.match(err, { code: '08P01', message: /sent message 'Z' before authentication completed/ });
});

t.test('a server that hangs up during authentication', async (t) => {
  const err = await loginThrough((s) => s.destroy());
  t.match(err, { code: '08006', message: /closed the connection during authentication/ });
});

t.test('a server that stalls during authentication is abandoned at the connect timeout', async (t) => {
  const port = await fakeTlsServer(() => undefined);
  await using proxy = await startProxy(db, { connectTo: `127.0.0.1:${port}`, connectTimeoutMs: 300 });
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'iam_user', database: 'orders' });
  const err = await client.connect().then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  t.match(err, { code: '08001', message: /timed out after 0\.3 s waiting for the server to complete the login/ });
});

t.test('a server that hangs up after AuthenticationOk', async (t) => {
  const err = await loginThrough((s) => {
    s.write(new Bytes().int32(3).join('R'));
    s.once('data', () => s.end(new Bytes().int32(0).join('R')));
  });
  t.ok(err, 'the client does not hang');
});

t.test('a server that never closes a cancel connection holds it only for the connect timeout', async (t) => {
  const cancels: TLSSocket[] = [];
  const port = await fakeTlsServer(
    (s) => {
      // The session's connection logs in; the cancel connection is held open (onCancel).
      s.write(new Bytes().int32(3).join('R'));
      s.once('data', () =>
        s.write(
          Buffer.concat([new Bytes().int32(0).join('R'), new Bytes().int32(7).int32(8).join('K'), new Bytes().raw([0x49]).join('Z')]),
        ),
      );
    },
    (s) => {
      // Reads the request and its FIN, and never answers or closes.
      s.allowHalfOpen = true;
      cancels.push(s);
    },
  );
  const proxy = await startProxy(db, { connectTo: `127.0.0.1:${port}`, connectTimeoutMs: 300 });
  const session = await WireClient.connect(proxy.port);
  session.write(startupBytes({ user: 'iam_user', database: 'orders' }));
  t.equal((await session.untilReady()).at(-1)?.code, 'Z');
  const cancel = await WireClient.connect(proxy.port);
  cancel.write(cancelRequest(7, Buffer.from([0, 0, 0, 8])));
  const failed = await proxy.line((l) => l.msg === 'cancel request could not be forwarded');
  t.equal(cancels.length, 1, 'the cancel reached the server');
  t.match(failed, { err: { message: 'the server did not close the cancel connection within 0.3 s' } });
  session.close();
  await proxy.close(1_000);
  t.pass('the proxy shut down: nothing of the cancel held it');
  cancels[0]!.destroy();
});
