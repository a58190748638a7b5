// The pool modes, each a Relay (src/relay.ts) over an instance's Pools: how a client gets a server, what
// it hears instead of a login, and which relay carries its session. A new mode is a file beside these
// and a line in POOL_MODES.
import { randomBytes } from 'node:crypto';
import { BackendCode } from '../protocol/constants.js';
import { backendKeyData, decodeBackendKey } from '../protocol/backend.js';
import type { CancelRoute, Lease, LeaseRequest, Relay } from '../relay.js';
import { ClientSettings } from './client-settings.js';
import { poolKeyOf } from './params.js';
import type { PoolMode, Pools } from './pool.js';
import { greeting, type PooledServer } from './server.js';
import { relayPooled } from './session-relay.js';
import { type Holding, relayTransactions } from './transaction-relay.js';

export const POOL_MODES: Readonly<Record<PoolMode, (pools: Pools) => Relay>> = {
  session: sessionMode,
  transaction: transactionMode,
};

/**
 * Session mode: a server lent for the client's whole session, and given back (reset) when the client
 * leaves it idle. The client's cancel key is the proxy's own (a server passes from client to client: an
 * old key must never reach a new client's query); a cancel with it goes to the server this client holds.
 */
function sessionMode(pools: Pools): Relay {
  return {
    keepsHalfClosed: false,
    async lease(request: LeaseRequest): Promise<Lease> {
      const key = poolKeyOf(request.packet, request.user);
      const server = await pools.acquireFor(key, request.signal);
      // A cancel that arrives late (its connection made after this client let the server go) must not
      // reach the query of the server's next client: the route asks whether this client still holds it.
      let held = true;
      const { keyData, unregister } = ownCancelKey(request, server.backendKey?.length ?? 8, () => (held ? server : undefined));
      const forget = () => {
        held = false;
        unregister();
      };
      return {
        toClient: server.greeting(keyData),
        fields: { pooled: server.id },
        opened: 'session opened from the pool',
        abandon: () => {
          forget(); // untouched: it goes straight back
          pools.release(server, key, 'idle');
        },
        // Not async: nothing of the lease (its greeting) stays referenced while the session is relayed.
        run: (link) =>
          relayPooled(link.client, server.socket, link.toClient, link.pipelined, link.clientEnded, {
            idleTransactionTimeoutMs: pools.settings.idleTransactionTimeoutMs,
            settings: new ClientSettings(key.params, () => ClientSettings.greetedIn(Buffer.concat(server.template().params))),
            server,
          }).then((end) => {
            forget();
            pools.release(server, key, end.serverGone ? 'gone' : end.serverIdle ? 'idle' : 'busy');
            return end;
          }),
      };
    },
  };
}

/**
 * Transaction mode: the greeting, with no server held (the pool's first login gave its values); a server
 * is lent per transaction, and a cancel goes to whichever server the client holds when it comes, if any.
 */
function transactionMode(pools: Pools): Relay {
  return {
    keepsHalfClosed: false,
    async lease(request: LeaseRequest): Promise<Lease> {
      const key = poolKeyOf(request.packet, request.user);
      const template = await pools.greeting(key, request.signal);
      const holding: Holding = { server: undefined };
      const { keyData, unregister } = ownCancelKey(request, template.keyLength, () => holding.server);
      return {
        toClient: greeting(template, keyData),
        fields: { pooled: 'transaction' },
        opened: 'session opened from the pool',
        abandon: unregister,
        run: (link) =>
          relayTransactions({
            client: link.client,
            pools,
            key,
            signal: link.signal,
            drain: link.drain,
            holding,
            toClient: link.toClient,
            pipelined: link.pipelined,
            clientEnded: link.clientEnded,
            greeted: () => ClientSettings.greetedIn(Buffer.concat(template.params)),
            log: link.log,
          }).then((end) => {
            unregister();
            return end;
          }),
      };
    },
  };
}

/**
 * The BackendKeyData a pooled client gets: the proxy's own, as long as the server's (a 4-byte secret in
 * protocol 3.0, longer only where the server's is), registered so a cancel with it goes where `route` says.
 */
function ownCancelKey(
  request: LeaseRequest,
  length: number,
  route: () => (PooledServer & CancelRoute) | undefined,
): { keyData: Buffer; unregister: () => void } {
  const bytes = randomKeyBytes(length);
  const keyData = backendKeyData(bytes.readUInt32BE(0) & 0x7fff_ffff || 1, bytes.subarray(4));
  const unregister = request.registerCancel(decodeBackendKey({ code: BackendCode.BackendKeyData, bytes: keyData }), route);
  return { keyData, unregister };
}

/** Cryptographic random bytes for the proxy's cancel keys, drawn from 4 KiB at a time (not one call per session). */
let randomPool = Buffer.alloc(0);
let randomAt = 0;
function randomKeyBytes(n: number): Buffer {
  if (randomAt + n > randomPool.length) {
    randomPool = randomBytes(Math.max(4096, n));
    randomAt = 0;
  }
  const out = Buffer.from(randomPool.subarray(randomAt, randomAt + n));
  randomPool.fill(0, randomAt, randomAt + n); // a key handed out is not kept here
  randomAt += n;
  return out;
}
