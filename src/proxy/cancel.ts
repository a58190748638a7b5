// CancelRequest routing (docs/protocol.md B6, C4, E2): a client's cancel goes, over verified TLS, to the
// server of the session that owns the key; an unknown key goes nowhere. The client never gets a reply.
import { once } from 'node:events';
import type { Connector } from '../cloud.js';
import { LENGTH_SIZE } from '../protocol/constants.js';
import type { CancelRequest } from '../protocol/startup.js';

/** Where pid + key start in a CancelRequest: after its length and request code. */
const CANCEL_KEY_OFFSET = LENGTH_SIZE + 4;

/** A pooled server a cancel can go to (PooledServer). */
export interface CancelRoute {
  /** The CancelRequest with the server's own key. */
  cancelRequest(): Buffer | undefined;
  /** Keep the server from passing to another client until the returned function is called. */
  beginCancel(): () => void;
}

/** Where a cancel goes: the server's connector, and for a pooled client the server it holds. */
export interface CancelTarget {
  readonly connector: Connector;
  /**
   * A pooled client holds the proxy's key: its cancel goes to the server it holds at that moment, with
   * the server's key, and nowhere when it holds none. Asked again just before the cancel is sent.
   * Undefined: the client's own server, with the request as received.
   */
  readonly held?: () => CancelRoute | undefined;
}

export class CancelRegistry {
  private readonly targets = new Map<string, CancelTarget>();

  /** Remember where the session with this BackendKeyData (pid + key) lives; returns the forget function. */
  register(backendKey: Buffer, target: CancelTarget): () => void {
    const id = backendKey.toString('hex');
    this.targets.set(id, target);
    return () => {
      if (this.targets.get(id) === target) this.targets.delete(id);
    };
  }

  lookup(request: CancelRequest): CancelTarget | undefined {
    return this.targets.get(request.bytes.subarray(CANCEL_KEY_OFFSET).toString('hex'));
  }
}

/**
 * Send the CancelRequest, byte for byte, over a fresh verified connection; wait until the server closes
 * it for at most the connect timeout (a server that never closes must not hold the proxy's shutdown).
 */
export async function forwardCancel(request: CancelRequest, target: CancelTarget, timeoutMs: number): Promise<void> {
  const route = target.held?.();
  if (target.held && !route) throw new Error('the client holds no server now');
  // From here until the server has taken the cancel, that server stays with this client.
  const done = route?.beginCancel();
  try {
    await sendCancel(target.connector, timeoutMs, () => {
      if (route && target.held!() !== route) throw new Error('the client no longer holds that server');
      const bytes = route ? route.cancelRequest() : request.bytes;
      if (!bytes) throw new Error('the server gave no cancel key at its login');
      return bytes;
    });
  } finally {
    done?.();
  }
}

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
