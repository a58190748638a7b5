// CancelRequest routing (PROTOCOL.md B6, C4, E2): a client's cancel goes, over verified TLS, to the
// server of the session that owns the key; an unknown key goes nowhere. The client never gets a reply.
import { once } from 'node:events';
import { LENGTH_SIZE } from '../protocol/constants.js';
import type { CancelRequest } from '../protocol/startup.js';
import { connectUpstream, type UpstreamTarget } from './upstream-connect.js';

/** Where pid + key start in a CancelRequest: after its length and request code. */
const CANCEL_KEY_OFFSET = LENGTH_SIZE + 4;

export class CancelRegistry {
  private readonly targets = new Map<string, UpstreamTarget>();

  /** Remember where the session with this BackendKeyData (pid + key) lives; returns the forget function. */
  register(backendKey: Buffer, target: UpstreamTarget): () => void {
    const id = backendKey.toString('hex');
    this.targets.set(id, target);
    return () => {
      if (this.targets.get(id) === target) this.targets.delete(id);
    };
  }

  lookup(request: CancelRequest): UpstreamTarget | undefined {
    return this.targets.get(request.bytes.subarray(CANCEL_KEY_OFFSET).toString('hex'));
  }
}

/** Send the CancelRequest, byte for byte, over a fresh verified connection; wait until the server closes it. */
export async function forwardCancel(request: CancelRequest, target: UpstreamTarget): Promise<void> {
  const server = await connectUpstream(target);
  try {
    server.end(request.bytes);
    server.resume();
    await once(server, 'close');
  } finally {
    server.destroy();
  }
}
