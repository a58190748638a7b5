// CancelRequest routing (docs/protocol.md B6, C4, E2): a client's cancel goes, over verified TLS, to the
// server of the session that owns the key; an unknown key goes nowhere. The client never gets a reply.
import type { Connector } from '../cloud.js';
import { LENGTH_SIZE } from '../protocol/constants.js';
import type { CancelRequest } from '../protocol/startup.js';
import type { CancelRoute } from '../relay.js';
import { sendCancel } from '../upstream/cancel.js';

/** Where pid + key start in a CancelRequest: after its length and request code. */
const CANCEL_KEY_OFFSET = LENGTH_SIZE + 4;

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
