// Node's floor for a pooled connect: the least a Node program can do for one, measured beside the proxy
// and pgbouncer by `npm run bench` (run.ts starts it in its own process). One server connection over
// verify-full TLS, logged in once with an IAM token and kept; per client: accept, read the startup,
// write a canned greeting, pass each Query to the server and its answer back, and at the client's
// Terminate run DISCARD ALL before the next client. No logs, no statement names, no settings, no
// cancel keys, no metrics, one client at a time (pgbench -C -c 1): what is left is Node's own cost of a
// connection and of two round trips over TLS. Each read is taken to hold whole messages (pgbench's are
// small): a floor, not a proxy.
//   node build/bench/floor.js PORT DB_PORT ENDPOINT CA_FILE   (the token in FLOOR_TOKEN)
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

const [port, dbPort, endpoint, caFile] = process.argv.slice(2) as [string, string, string, string];
const token = process.env.FLOOR_TOKEN ?? '';
delete process.env.FLOOR_TOKEN;

const message = (code: string, body: Buffer) => {
  const out = Buffer.alloc(5 + body.length);
  out[0] = code.charCodeAt(0);
  out.writeUInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
};
const cstrings = (...texts: string[]) => Buffer.from(texts.map((text) => `${text}\0`).join(''));

const raw = connect({ host: '127.0.0.1', port: Number(dbPort) });
await once(raw, 'connect');
raw.write(Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])); // SSLRequest
const [answer] = (await once(raw, 'data')) as [Buffer];
if (answer[0] !== 0x53) throw new Error('the database refused TLS');
const server = tlsConnect({ socket: raw, ca: readFileSync(caFile), servername: endpoint });
await once(server, 'secureConnect');
server.setNoDelay(true);
const startup = Buffer.concat([Buffer.from([0, 3, 0, 0]), cstrings('user', 'iam_user', 'database', 'orders', '')]);
const length = Buffer.alloc(4);
length.writeUInt32BE(4 + startup.length);
server.write(Buffer.concat([length, startup]));

// The login, kept as the greeting (without the server's BackendKeyData: a client cannot cancel here).
const greeting: Buffer[] = [];
let pending = Buffer.alloc(0);
await new Promise<void>((resolve, reject) => {
  const onData = (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 5 && pending.length >= 1 + pending.readUInt32BE(1)) {
      const frame = pending.subarray(0, 1 + pending.readUInt32BE(1));
      pending = pending.subarray(frame.length);
      if (frame[0] === 0x52 && frame.readUInt32BE(5) === 3) server.write(message('p', cstrings(token)));
      else if (frame[0] === 0x45) reject(new Error('the database refused the login'));
      else if (frame[0] !== 0x4b) greeting.push(Buffer.from(frame));
      if (frame[0] === 0x5a) {
        server.off('data', onData);
        resolve();
      }
    }
  };
  server.on('data', onData);
});
const canned = Buffer.concat(greeting);
const DISCARD = message('Q', cstrings('DISCARD ALL'));

let client: Socket | undefined;
/** The server's answer to DISCARD ALL is read, not passed on: it ends with ReadyForQuery. */
let resetting = false;
server.on('data', (chunk: Buffer) => {
  if (!resetting) client?.write(chunk);
  else if (chunk.length >= 6 && chunk[chunk.length - 6] === 0x5a) resetting = false;
});
createServer({ noDelay: true }, (socket) => {
  let started = false;
  socket.on('error', () => undefined);
  socket.on('data', (chunk: Buffer) => {
    if (!started) {
      started = true;
      client = socket;
      socket.write(canned);
      return;
    }
    for (let at = 0; at < chunk.length; ) {
      const size = 1 + chunk.readUInt32BE(at + 1);
      if (chunk[at] === 0x58) {
        resetting = true;
        server.write(DISCARD);
        socket.end();
      } else server.write(chunk.subarray(at, at + size));
      at += size;
    }
  });
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\n'));
