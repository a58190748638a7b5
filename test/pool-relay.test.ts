// The pooled relay in process, chunk by chunk as the sockets would deliver them: what reaches the server,
// and whether the server can be handed on when the client leaves.
import t from 'tap';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { Duplex } from 'node:stream';
import { relayPooled } from '../src/pool/session-relay.js';
import { Bytes } from './support/bytes.js';
import { socketStandIn } from './support/socket-stand-in.js';

/** A socket stand-in (written bytes kept, received ones pushed). */
const end = socketStandIn;

const query = (sql: string) => new Bytes().cstring(sql).join('Q');
const ready = (status: string) => new Bytes().raw(Buffer.from(status)).join('Z');
const terminate = Buffer.from([0x58, 0, 0, 0, 4]);
const complete = new Bytes().cstring('SELECT 1').join('C');

function relay(toServer: Buffer = Buffer.alloc(0), clientEnded = false) {
  const client = end();
  const server = end();
  const done = relayPooled(
    client.socket as unknown as Socket,
    server.socket as unknown as TLSSocket,
    Buffer.alloc(0),
    toServer,
    clientEnded,
  );
  return { client, server, done };
}

t.test('a Terminate is held back, and an idle server can be handed on', async (t) => {
  const { client, server, done } = relay();
  await client.receive(query('SELECT 1'));
  await server.receive(Buffer.concat([complete, ready('I')]));
  await client.receive(terminate);
  const end = await done;
  t.match(end, { serverIdle: true, serverGone: false, reason: 'client closed the connection' });
  t.same(server.written(), query('SELECT 1'), 'the server got the query, not the Terminate');
});

t.test('a Terminate split across reads: its first bytes reached the server, which is not handed on', async (t) => {
  const { client, done } = relay();
  await client.receive(terminate.subarray(0, 2));
  await client.receive(terminate.subarray(2));
  t.match(await done, { serverIdle: false });
});

t.test('leaving with an answer owed, or inside a transaction: not handed on', async (t) => {
  const owed = relay();
  await owed.client.receive(Buffer.concat([query('SELECT pg_sleep(1)'), terminate]));
  t.match(await owed.done, { serverIdle: false, serverGone: false });
  const inTx = relay();
  await inTx.client.receive(query('BEGIN'));
  await inTx.server.receive(Buffer.concat([complete, ready('T')]));
  await inTx.client.receive(terminate);
  t.match(await inTx.done, { serverIdle: false });
});

t.test('a client gone with answers owed: the session ends at once, the server is not idle (it is cancelled and closed)', async (t) => {
  const { client, server, done } = relay(query('SELECT pg_sleep(20)'), true);
  t.match(await done, { serverIdle: false, serverGone: false, reason: 'client closed the connection' });
  await server.turn();
  t.same(server.written(), query('SELECT pg_sleep(20)'), 'the query went out before the client left');
  t.same(client.written(), Buffer.alloc(0));
});

t.test("session mode, libpq's extended COPY FROM STDIN: the Sync sent in the copy is not owed, the server stays poolable", async (t) => {
  const { client, server, done } = relay();
  const parse = new Bytes().cstring('').cstring('COPY t FROM STDIN').raw([0, 0]).join('P');
  const bind = new Bytes().cstring('').cstring('').raw([0, 0, 0, 0, 0, 0]).join('B');
  const execute = new Bytes().cstring('').int32(0).join('E');
  const sync = new Bytes().join('S');
  await client.receive(Buffer.concat([parse, bind, execute, sync]));
  await server.receive(Buffer.concat([new Bytes().join('1'), new Bytes().join('2'), new Bytes().raw([0, 0, 0]).join('G')]));
  await client.receive(Buffer.concat([new Bytes().raw(Buffer.from('1\n')).join('d'), new Bytes().join('c'), sync]));
  await server.receive(Buffer.concat([new Bytes().cstring('COPY 1').join('C'), ready('I')]));
  await client.receive(Buffer.from([0x58, 0, 0, 0, 4]));
  t.match(await done, { serverIdle: true, reason: 'client closed the connection' });
});

t.test('a FATAL nobody asked for: the server is gone', async (t) => {
  const { server, done } = relay();
  await server.receive(new Bytes().cstring('SFATAL').cstring('C57P01').cstring('Mterminating').raw([0]).join('E'));
  server.socket.push(null);
  t.match(await done, { serverGone: true, reason: 'server closed the connection' });
});

t.test('garbage from either side ends the session; the server is not reused', async (t) => {
  const fromClient = relay();
  await fromClient.client.receive(Buffer.from([0x51, 0, 0, 0, 1]));
  t.match(await fromClient.done, { serverIdle: false, reason: /the client broke the protocol: invalid message length 1/ });
  const fromServer = relay();
  await fromServer.server.receive(Buffer.from([0x44, 0, 0, 0, 2]));
  t.match(await fromServer.done, { serverGone: true, reason: /the server broke the protocol/ });
});

/** A socket stand-in that holds its writes until `drain()`: a reader slower than its writer. */
function slow() {
  const held: Array<() => void> = [];
  const socket = new Duplex({
    writableHighWaterMark: 4,
    read() {},
    write(_chunk: Buffer, _enc, done) {
      held.push(done);
    },
    final(done) {
      done();
    },
  });
  return {
    socket,
    drain: () => {
      for (const done of held.splice(0)) done();
    },
  };
}

t.test('backpressure both ways: a side that cannot keep up pauses the other until it drains', async (t) => {
  const client = slow();
  const server = end();
  const done = relayPooled(
    client.socket as unknown as Socket,
    server.socket as unknown as TLSSocket,
    Buffer.alloc(0),
    Buffer.alloc(0),
    false,
  );
  await server.receive(Buffer.concat([new Bytes().cstring('x'.repeat(100)).join('N'), ready('I')]));
  t.ok(server.socket.isPaused(), 'the server is paused while the client is behind');
  client.drain();
  await server.turn();
  t.notOk(server.socket.isPaused(), 'and resumed once it drained');
  server.socket.destroy(new Error('reset by peer'));
  t.match(await done, { serverGone: true, reason: 'error on the server connection: reset by peer' });

  const fast = end();
  const stuck = slow();
  const other = relayPooled(
    fast.socket as unknown as Socket,
    stuck.socket as unknown as TLSSocket,
    Buffer.alloc(0),
    Buffer.alloc(0),
    false,
  );
  await fast.receive(query('x'.repeat(100)));
  t.ok(fast.socket.isPaused(), 'the client is paused while the server is behind');
  stuck.drain();
  await fast.turn();
  t.notOk(fast.socket.isPaused());
  fast.socket.destroy(new Error('client gone'));
  t.match(await other, { reason: 'error on the client connection: client gone' });
});

t.test('a late cancel: the client let the server go while the cancel connection was made, so nothing is sent', async (t) => {
  const { forwardCancel } = await import('../src/proxy/cancel.js');
  const server = end();
  const connector = {
    endpoint: { host: 'db', port: 5432 },
    connectTo: { host: 'db', port: 5432 },
    connect: async () => server.socket as unknown as TLSSocket,
  };
  const request = { kind: 'cancel' as const, pid: 1, key: Buffer.alloc(4), bytes: Buffer.alloc(16) };
  let holds = true;
  let released = 0;
  const held = { cancelRequest: () => Buffer.alloc(16, 1), beginCancel: () => () => void released++ };
  const connect = connector.connect;
  connector.connect = async () => {
    holds = false; // the client's transaction ended while the cancel connection was being made
    return connect();
  };
  await t.rejects(forwardCancel(request, { connector, held: () => (holds ? held : undefined) }, 1_000), /no longer holds that server/);
  t.equal(server.written().length, 0, 'no cancel reached the server');
  t.equal(released, 1, 'the server was kept from other clients until the cancel was settled, then let go');
  await t.rejects(
    forwardCancel(request, { connector, held: () => undefined }, 1_000),
    /holds no server now/,
    'a client holding no server: dropped',
  );
});
