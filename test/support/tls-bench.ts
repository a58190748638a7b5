// Local TLS cost: client handshakes per second against a proxy with --client-tls auto (an ECDSA P-256
// certificate), SSLRequest + handshake + close, sequential and 4 at a time. Run: node build/test/support/tls-bench.js
import { once } from 'node:events';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { startTestDb } from './testdb.js';
import { startProxy } from './proxy.js';
import { sslRequest } from './bytes.js';

const db = await startTestDb();
const proxy = await startProxy(db);

async function handshake(port: number): Promise<void> {
  const raw = connect({ host: '127.0.0.1', port });
  await once(raw, 'connect');
  raw.write(sslRequest());
  await once(raw, 'data');
  const secure = tlsConnect({ socket: raw, rejectUnauthorized: false, servername: 'localhost' });
  await once(secure, 'secureConnect');
  secure.destroy();
}

async function plain(port: number): Promise<void> {
  const raw = connect({ host: '127.0.0.1', port });
  await once(raw, 'connect');
  raw.destroy();
}

async function rate(what: (port: number) => Promise<void>, parallel: number, seconds = 3): Promise<number> {
  const until = performance.now() + seconds * 1000;
  let n = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (performance.now() < until) {
        await what(proxy.port);
        n++;
      }
    }),
  );
  return Math.round(n / seconds);
}

const cpu0 = process.cpuUsage();
const results = {
  tcpConnectsPerSecond: await rate(plain, 4),
  tlsHandshakesPerSecondSequential: await rate(handshake, 1),
  tlsHandshakesPerSecond4Parallel: await rate(handshake, 4),
};
const cpu = process.cpuUsage(cpu0);
console.log(JSON.stringify({ ...results, benchProcessCpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(2) }, null, 1));
await proxy.close();
await db.destroy();
