// A CancelRequest sent to a server over a fresh verified connection: for a client's cancel (the
// proxy's routing is in src/proxy/cancel.ts) and for a pool's own (a client left mid-query).
import { once } from 'node:events';
import type { Connector } from '../cloud.js';

/**
 * Send a CancelRequest (`request()`, asked once connected) over a fresh verified connection; wait until
 * the server closes it, for at most `timeoutMs`.
 */
export async function sendCancel(connector: Connector, timeoutMs: number, request: () => Buffer): Promise<void> {
  const server = await connector.connect();
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    server.end(request());
    server.resume();
    await once(server, 'close', { signal }).catch((err: Error) => {
      throw signal.aborted ? new Error(`the server did not close the cancel connection within ${timeoutMs / 1000} s`) : err;
    });
  } finally {
    server.destroy();
  }
}
