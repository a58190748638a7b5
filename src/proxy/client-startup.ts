// Phase 1: the client's startup packets (PROTOCOL.md B1-B10), up to its StartupMessage or CancelRequest.
import type { Socket } from 'node:net';
import { NegotiationReply, SqlState } from '../protocol/constants.js';
import { WireError } from '../protocol/errors.js';
import { readStartupPacket, type CancelRequest, type StartupMessage } from '../protocol/startup.js';
import type { Inbox } from './inbox.js';

const DECLINE = Buffer.from([NegotiationReply.Decline]);

/**
 * Read packets until the client says who it is (StartupMessage) or what to cancel (CancelRequest).
 * SSLRequest and GSSENCRequest are declined with 'N', each at most once (B4, B5); local TLS for clients
 * is a later phase and plugs in here.
 */
export async function readClientStartup(client: Socket, inbox: Inbox): Promise<StartupMessage | CancelRequest> {
  const seen = new Set<'ssl' | 'gssenc'>();
  for (;;) {
    const read = readStartupPacket(inbox.buffered);
    if ('needed' in read) {
      await inbox.fill(read.needed);
      continue;
    }
    const { packet, size } = read;
    inbox.consume(size);
    switch (packet.kind) {
      case 'startup':
      case 'cancel':
        return packet;
      case 'tls-hello':
        // Direct TLS (sslnegotiation=direct) needs a local certificate: without one, close as a
        // server with ssl=off does. The client then reports the failed handshake.
        throw new WireError(SqlState.ProtocolViolation, 'direct TLS connection attempted, and local TLS is off', {
          reason: 'bad_startup',
          silent: true,
        });
      case 'ssl':
      case 'gssenc':
        if (seen.has(packet.kind)) {
          throw new WireError(SqlState.ProtocolViolation, `${packet.kind === 'ssl' ? 'SSL' : 'GSSENC'}Request sent twice`, {
            reason: 'bad_startup',
          });
        }
        seen.add(packet.kind);
        client.write(DECLINE);
        break;
    }
  }
}
