// The 1:1 relay (--pool-mode off): each client gets a server of its own, logged in with a token for it,
// and the two sockets are spliced byte for byte (splice.ts). The server's own BackendKeyData reaches the
// client, so a cancel goes to that server with the request as received.
import type { Relay } from '../relay.js';
import { type LoginTarget, openServer } from '../upstream/login.js';
import { splice } from './splice.js';

export function directRelay(target: LoginTarget): Relay {
  return {
    keepsHalfClosed: true,
    async lease(request) {
      const { server, login } = await openServer(target, request);
      const forget = login.backendKey && !login.failure ? request.registerCancel(login.backendKey) : () => undefined;
      return {
        toClient: login.toClient,
        fields: login.token ? login.token.signer : { auth: 'none' },
        opened: login.token ? 'session opened' : 'session opened: the server asked for no password, so no token was sent',
        refused: login.failure,
        abandon: () => {
          forget();
          server.destroy();
        },
        // Not async: nothing of the lease (the login's messages) stays referenced while the session is relayed.
        run: (link) =>
          splice(link.client, server, link.toClient, link.pipelined, link.clientEnded).then((end) => {
            forget();
            return end;
          }),
      };
    },
  };
}
