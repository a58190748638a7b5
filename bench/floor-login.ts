// The floors' login (floor.ts, floor-tx.ts): one server connection over verify-full TLS, logged in with an
// IAM token, and what a client of it is greeted with.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

export const message = (code: string, body: Buffer): Buffer => {
  const out = Buffer.alloc(5 + body.length);
  out[0] = code.charCodeAt(0);
  out.writeUInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
};
export const cstrings = (...texts: string[]): Buffer => Buffer.from(texts.map((text) => `${text}\0`).join(''));

/** A server logged in as iam_user to orders; `greeting`: its login's messages but BackendKeyData (no cancels here). */
export async function floorLogin(
  dbPort: number,
  endpoint: string,
  caFile: string,
  token: string,
): Promise<{ socket: TLSSocket; greeting: Buffer }> {
  const raw = connect({ host: '127.0.0.1', port: dbPort });
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
  return { socket: server, greeting: Buffer.concat(greeting) };
}
