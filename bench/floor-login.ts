// The floors' login (floor.ts, floor-tx.ts): one server connection over verify-full TLS, logged in with an
// IAM token, and what a client of it is greeted with. Built with the proxy's own protocol helpers; only
// what the floors do per client is kept to Node alone.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { readBackendFrame } from '../src/protocol/backend.js';
import { AuthCode, BackendCode, FrontendCode, HEADER_SIZE, NegotiationReply, ProtocolVersion } from '../src/protocol/constants.js';
import { frontendMessage } from '../src/protocol/frontend.js';
import { startupMessage } from '../src/protocol/startup.js';
import { SSL_REQUEST } from '../src/upstream/connect.js';

/** A server logged in as iam_user to orders; `greeting`: its login's messages but BackendKeyData (no cancels here). */
export async function floorLogin(
  dbPort: number,
  endpoint: string,
  caFile: string,
  token: string,
): Promise<{ socket: TLSSocket; greeting: Buffer }> {
  const raw = connect({ host: '127.0.0.1', port: dbPort });
  await once(raw, 'connect');
  raw.write(SSL_REQUEST);
  const [answer] = (await once(raw, 'data')) as [Buffer];
  if (answer[0] !== NegotiationReply.Accept) throw new Error('the database refused TLS');
  const server = tlsConnect({ socket: raw, ca: readFileSync(caFile), servername: endpoint });
  await once(server, 'secureConnect');
  server.setNoDelay(true);
  const param = (name: string, value: string) => ({ name, value: Buffer.from(value) });
  server.write(startupMessage(ProtocolVersion.V3_0, [param('user', 'iam_user'), param('database', 'orders')]));
  const greeting: Buffer[] = [];
  let pending = Buffer.alloc(0);
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      for (let frame = readBackendFrame(pending); frame; frame = readBackendFrame(pending)) {
        pending = pending.subarray(frame.bytes.length);
        const { code, bytes } = frame;
        if (code === BackendCode.Authentication && bytes.readUInt32BE(HEADER_SIZE) === AuthCode.CleartextPassword)
          server.write(frontendMessage(FrontendCode.Password, token));
        else if (code === BackendCode.ErrorResponse) reject(new Error('the database refused the login'));
        else if (code !== BackendCode.BackendKeyData) greeting.push(Buffer.from(bytes));
        if (code === BackendCode.ReadyForQuery) {
          server.off('data', onData);
          resolve();
        }
      }
    };
    server.on('data', onData);
  });
  return { socket: server, greeting: Buffer.concat(greeting) };
}
