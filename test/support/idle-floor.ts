// The floor under the proxy's memory per idle session: what Node itself keeps for one TLS connection to
// PostgreSQL (OpenSSL's read and write buffers, its record state, Node's TLS and TCP wraps), measured the
// way the proxy is measured. Run as a child of its own (`node idle-floor.js HOST PORT SERVERNAME CA USER
// DATABASE N`): a fresh process opens N connections, each logged in with one query run, and prints its
// resident growth per connection, in bytes.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { connect as tlsConnect, createSecureContext, type TLSSocket } from 'node:tls';
import { Bytes, sslRequest, startupBytes } from './bytes.js';

/** Resident set of this process, in bytes. */
export const ownRss = (pid: number | 'self' = 'self') =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

/** Resident growth per connection of process `pid`: one opened to warm it, then `n` more (25 at a time). */
export async function growthPerConnection<T>(
  pid: number | 'self',
  n: number,
  open: () => Promise<T>,
): Promise<{ bytes: number; held: T[] }> {
  const held = [await open()];
  // Not a synchronization: the start-up's garbage is collected over the next moments, and no event says when.
  await new Promise((r) => setTimeout(r, 500));
  const before = ownRss(pid);
  for (let i = 0; i < n; i += 25) held.push(...(await Promise.all(Array.from({ length: Math.min(25, n - i) }, open))));
  await new Promise((r) => setTimeout(r, 1_000));
  return { bytes: (ownRss(pid) - before) / n, held };
}

/** Resolves at the next ReadyForQuery on `socket`; rejects on an ErrorResponse. */
function ready(socket: TLSSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    let pending = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 1 + pending.readUInt32BE(1)) {
        const code = pending[0];
        pending = pending.subarray(1 + pending.readUInt32BE(1));
        if (code === 0x45 || code === 0x5a) {
          socket.off('data', onData);
          if (code === 0x45) reject(new Error('the server refused the login'));
          else resolve();
          return;
        }
      }
    };
    socket.on('data', onData);
  });
}

async function main(): Promise<void> {
  const [host, port, servername, caFile, user, database, count] = process.argv.slice(2) as [
    string,
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  // One context for every connection, as the proxy keeps one per instance.
  const secureContext = createSecureContext({ ca: readFileSync(caFile), ecdhCurve: 'P-256:X25519' });
  const open = async () => {
    const raw = connect({ host, port: Number(port) });
    await once(raw, 'connect');
    raw.write(sslRequest());
    const [answer] = (await once(raw, 'data')) as [Buffer];
    if (answer[0] !== 0x53) throw new Error('the server does not take TLS');
    const socket = tlsConnect({ socket: raw, servername, secureContext });
    await once(socket, 'secureConnect');
    socket.write(startupBytes({ user, database }));
    await ready(socket);
    socket.write(new Bytes().cstring('SELECT 1').join('Q'));
    await ready(socket);
    return socket;
  };
  const { bytes, held } = await growthPerConnection('self', Number(count), open);
  process.stdout.write(`${JSON.stringify({ bytes })}\n`);
  for (const socket of held) socket.destroy();
}

if (process.argv[1]?.endsWith('idle-floor.js')) await main();
