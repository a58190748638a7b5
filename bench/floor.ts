// Node's floor for a pooled connect: the least a Node program can do for one, measured beside the proxy
// and pgbouncer by `npm run bench` (run.ts starts it in its own process). One server connection over
// verify-full TLS, logged in once with an IAM token and kept; per client: accept, read the startup,
// write a canned greeting, pass each Query to the server and its answer back, and at the client's
// Terminate run DISCARD ALL before the next client. No logs, no statement names, no settings, no
// cancel keys, no metrics, one client at a time (pgbench -C -c 1): what is left is Node's own cost of a
// connection and of two round trips over TLS. Each read is taken to hold whole messages (pgbench's are
// small): a floor, not a proxy.
//   node build/bench/floor.js PORT DB_PORT ENDPOINT CA_FILE   (the token in FLOOR_TOKEN)
import { createServer, type Socket } from 'node:net';
import { FrontendCode } from '../src/protocol/constants.js';
import { frontendMessage } from '../src/protocol/frontend.js';
import { floorLogin } from './floor-login.js';

const [port, dbPort, endpoint, caFile] = process.argv.slice(2) as [string, string, string, string];
const token = process.env.FLOOR_TOKEN ?? '';
delete process.env.FLOOR_TOKEN;

const { socket: server, greeting: canned } = await floorLogin(Number(dbPort), endpoint, caFile, token);
const DISCARD = frontendMessage(FrontendCode.Query, 'DISCARD ALL');

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
