// Node's floor for transaction pooling: the least a Node program can do to lend a few servers to many
// clients a transaction at a time, measured beside the proxy and pgbouncer by `npm run bench` (run.ts
// starts it in its own process). SERVERS server connections over verify-full TLS, each logged in once with
// an IAM token and kept; per client: accept, read the startup, write a canned greeting; per transaction:
// an idle server (or a place in the queue for the next one), the client's bytes to it, its answer back,
// and the server lent on at its ReadyForQuery idle. No logs, no statement names (pgbench -M extended: the
// unnamed statement, parsed in each transaction), no settings, no cancel keys, no metrics, no timeouts.
// Each client read is taken to hold whole messages (pgbench's are small): a floor, not a proxy.
//   node build/bench/floor-tx.js PORT DB_PORT ENDPOINT CA_FILE SERVERS   (the token in FLOOR_TOKEN)
import { createServer, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { floorLogin } from './floor-login.js';

const [port, dbPort, endpoint, caFile, count] = process.argv.slice(2) as [string, string, string, string, string];
const token = process.env.FLOOR_TOKEN ?? '';
delete process.env.FLOOR_TOKEN;

interface Server {
  readonly socket: TLSSocket;
  client: Client | undefined;
  /** Bytes of the current message still to come in later reads. */
  rest: number;
}
interface Client {
  readonly socket: Socket;
  server: Server | undefined;
  queued: Buffer[];
}

const logins = await Promise.all(Array.from({ length: Number(count) }, () => floorLogin(Number(dbPort), endpoint, caFile, token)));
const canned = logins[0]!.greeting;
const idle: Server[] = [];
const waiting: Client[] = [];

const lend = (server: Server, client: Client) => {
  server.client = client;
  client.server = server;
};

for (const { socket } of logins) {
  const server: Server = { socket, client: undefined, rest: 0 };
  idle.push(server);
  socket.on('data', (chunk: Buffer) => {
    const client = server.client!;
    client.socket.write(chunk);
    // Walk the messages to the read's end: the last one whole, a ReadyForQuery idle, ends the transaction.
    let at = server.rest;
    let idleAtEnd = false;
    while (at < chunk.length) {
      if (at + 5 > chunk.length) throw new Error('floor: a message header split across reads');
      const size = 1 + chunk.readUInt32BE(at + 1);
      idleAtEnd = chunk[at] === 0x5a && at + size === chunk.length && chunk[at + 5] === 0x49;
      at += size;
    }
    server.rest = at - chunk.length;
    if (!idleAtEnd) return;
    client.server = undefined;
    const next = waiting.shift();
    if (!next) {
      server.client = undefined;
      idle.push(server);
      return;
    }
    lend(server, next);
    socket.write(next.queued.length === 1 ? next.queued[0]! : Buffer.concat(next.queued));
    next.queued = [];
  });
}

createServer({ noDelay: true }, (socket) => {
  const client: Client = { socket, server: undefined, queued: [] };
  let started = false;
  socket.on('error', () => undefined);
  socket.on('data', (chunk: Buffer) => {
    if (!started) {
      started = true;
      socket.write(canned);
      return;
    }
    if (client.server) {
      client.server.socket.write(chunk);
      return;
    }
    if (chunk[0] === 0x58) {
      socket.end(); // Terminate between transactions
      return;
    }
    const server = idle.pop();
    if (server) {
      lend(server, client);
      server.socket.write(chunk);
      return;
    }
    if (client.queued.length === 0) waiting.push(client);
    client.queued.push(chunk);
  });
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\n'));
