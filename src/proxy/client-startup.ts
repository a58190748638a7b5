// Phase 1: the client's startup packets (docs/protocol.md B1-B10), up to its StartupMessage or CancelRequest,
// with the local TLS upgrade: SSLRequest answered 'S' (or 'N' when client TLS is off), and PostgreSQL
// 17's direct TLS (a ClientHello first, ALPN "postgresql" required).
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { NegotiationReply, SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { readStartupPacket, type CancelRequest, type StartupMessage } from '../protocol/startup.js';
import type { ClientTls } from './client-tls.js';
import { Inbox } from '../net/inbox.js';

const DECLINE = Buffer.from([NegotiationReply.Decline]);
const ACCEPT = Buffer.from([NegotiationReply.Accept]);
export const ALPN = 'postgresql';

/** The client link as the startup leaves it: the socket to use from now on (TLS or not) and its inbox. */
export interface ClientLink {
  socket: Socket;
  inbox: Inbox;
  encrypted: boolean;
}

/**
 * Read packets until the client says who it is (StartupMessage) or what to cancel (CancelRequest).
 * SSLRequest and GSSENCRequest are answered at most once each (B4, B5); `link` is upgraded in place
 * when TLS is negotiated. `signal` (the startup timeout) aborts a handshake in progress too.
 */
export async function readClientStartup(
  link: ClientLink,
  tls: ClientTls | Promise<ClientTls> | undefined,
  signal?: AbortSignal,
): Promise<StartupMessage | CancelRequest> {
  const seen = new Set<'ssl' | 'gssenc'>();
  for (;;) {
    const read = readStartupPacket(link.inbox.buffered);
    if ('needed' in read) {
      await link.inbox.fill(read.needed);
      continue;
    }
    const { packet, size } = read;
    link.inbox.consume(size);
    switch (packet.kind) {
      case 'startup':
      case 'cancel':
        return packet;
      case 'tls-hello':
        if (!tls || link.encrypted) {
          // Without a local certificate, close as a server with ssl=off does; the client reports it.
          throw new WireError(SqlState.ProtocolViolation, 'direct TLS connection attempted, and local TLS is off', {
            reason: Failure.BadStartup,
            silent: true,
          });
        }
        await upgrade(link, await tls, true, signal);
        break;
      case 'ssl':
      case 'gssenc':
        if (seen.has(packet.kind) || link.encrypted) {
          throw new WireError(SqlState.ProtocolViolation, `${packet.kind === 'ssl' ? 'SSL' : 'GSSENC'}Request sent twice`, {
            reason: Failure.BadStartup,
          });
        }
        seen.add(packet.kind);
        if (packet.kind === 'gssenc' || !tls) {
          link.socket.write(DECLINE);
          break;
        }
        // The certificate first (made once the listeners are up, maybe still being made): 'S' goes out only when the
        // handshake can follow at once, so the ClientHello reaches the TLS layer directly.
        tls = await tls;
        // Bytes already sent behind the SSLRequest were never encrypted: a man in the middle could have
        // put them there (CVE-2021-23214). PostgreSQL refuses them in the same words.
        if (link.inbox.buffered.length > 0) {
          throw new WireError(SqlState.ProtocolViolation, 'received unencrypted data after SSL request', { reason: Failure.BadStartup });
        }
        link.socket.write(ACCEPT);
        await upgrade(link, tls, false, signal);
        break;
    }
  }
}

/** The TLS handshake on the client link; `direct`: the ClientHello is already in the inbox. */
async function upgrade(link: ClientLink, tls: ClientTls, direct: boolean, signal?: AbortSignal): Promise<void> {
  const raw = link.socket;
  const head = link.inbox.release();
  const secure = new TLSSocket(head.length > 0 ? prefixed(raw, head) : raw, {
    isServer: true,
    secureContext: tls.context,
    ALPNProtocols: [ALPN],
  });
  const closed = () => fail(new Error('the client closed the connection'));
  let fail!: (err: Error) => void;
  const onAbort = () => fail(signal!.reason as Error);
  try {
    await new Promise<void>((resolve, reject) => {
      fail = (err: Error) => {
        // Destroyed, never written to: a shutdown's FATAL must not land in plaintext inside a handshake.
        secure.destroy();
        raw.destroy();
        reject(
          err instanceof WireError
            ? err
            : new WireError(SqlState.ProtocolViolation, `TLS handshake with the client failed: ${err.message}`, {
                reason: Failure.ClientTls,
                silent: true,
              }),
        );
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      secure.once('secure', resolve);
      secure.once('error', fail);
      // allowHalfOpen: a FIN mid-handshake is only an 'end'.
      secure.once('end', closed);
      secure.once('close', closed);
    });
  } finally {
    // Only ours: the TLS socket has listeners of its own on these events (freeing OpenSSL's state on close).
    signal?.removeEventListener('abort', onAbort);
    secure.off('error', fail);
    secure.off('end', closed);
    secure.off('close', closed);
  }
  link.socket = secure;
  link.inbox = new Inbox(secure);
  link.encrypted = true;
  // Direct TLS must say it speaks PostgreSQL (ALPN), as PostgreSQL 17 demands: no cross-protocol use.
  if (direct && secure.alpnProtocol !== ALPN) {
    throw new WireError(SqlState.ProtocolViolation, `direct TLS connections must negotiate ALPN "${ALPN}"`, { reason: Failure.BadStartup });
  }
}

/** A stream that yields `head` and then what `raw` sends: the TLS layer reads the ClientHello first. */
export function prefixed(raw: Socket, head: Buffer): Duplex {
  const stream = new Duplex({
    read: () => void raw.resume(),
    write: (chunk: Buffer, _encoding, done) => void raw.write(chunk, done),
    final: (done) => void raw.end(done),
    destroy: (err, done) => {
      raw.destroy(err ?? undefined);
      done(err);
    },
  });
  stream.push(head);
  raw.on('data', (chunk: Buffer) => stream.push(chunk) || raw.pause());
  raw.on('end', () => stream.push(null));
  raw.on('close', () => stream.destroy());
  raw.resume();
  return stream;
}
