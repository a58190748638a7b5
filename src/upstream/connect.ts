// Phase 2: TCP to the dial address, SSLRequest, exactly one 'S', TLS verify-full for the endpoint name
// (docs/protocol.md C1-C4). Never plaintext.
import { once } from 'node:events';
import { connect as tcpConnect, isIP, type Socket } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import type { ConnectHints, Connector } from '../cloud.js';
import { formatHostPort, type HostPort } from '../host-port.js';
import { LENGTH_SIZE, NegotiationReply, RequestCode, SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { Inbox } from '../net/inbox.js';

export interface UpstreamTarget {
  /** The name the certificate must carry (and tokens are signed for). */
  readonly endpoint: HostPort;
  /** Where the TCP connection goes: the endpoint, or a tunnel / pinned address. */
  readonly connectTo: HostPort;
  /** The CAs to trust (built once: a SecureContext parses its CAs when made, not per connection). */
  readonly tls: SecureContext;
  /** The cloud's words for what the user can do when TLS cannot be had or trusted. */
  readonly hints: ConnectHints;
  readonly connectTimeoutMs: number;
  /** The SNI name, when not the endpoint's host (null: none; Cloud SQL's connection name is no host name). */
  readonly servername?: string | null;
  /** The server identity check, when not the endpoint's host name (Cloud SQL: CN = PROJECT:INSTANCE). */
  readonly checkIdentity?: (cert: PeerCertificate) => Error | undefined;
}

/** The Connector of an instance reached by PostgreSQL's SSLRequest and TLS verify-full. */
export function pgTlsConnector(target: UpstreamTarget): Connector {
  return { endpoint: target.endpoint, connectTo: target.connectTo, connect: (signal) => connectUpstream(target, signal) };
}

/** The 8-byte SSLRequest. */
export const SSL_REQUEST = (() => {
  const b = Buffer.alloc(LENGTH_SIZE + 4);
  b.writeUInt32BE(b.length, 0);
  b.writeUInt32BE(RequestCode.SSLRequest, LENGTH_SIZE);
  return b;
})();

/** TLS verification failures that mean "no CA in the bundle vouches for this chain". */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
]);

/**
 * Open a verified TLS connection to the server. The whole exchange is bounded by the target's connect
 * timeout; `signal` aborts it (the client went away).
 */
export async function connectUpstream(target: UpstreamTarget, signal?: AbortSignal): Promise<TLSSocket> {
  // An abort that came first is never heard by a listener: nothing is dialled for a client already gone.
  signal?.throwIfAborted();
  const where = formatHostPort(target.connectTo);
  const controller = new AbortController();
  let stage = 'TCP connect';
  const timer = setTimeout(
    () =>
      controller.abort(
        new WireError(
          SqlState.UnableToConnect,
          `timed out after ${target.connectTimeoutMs / 1000} s in ${stage} to the server at ${where}`,
          {
            reason: Failure.UpstreamTimeout,
            hint: 'Check that the dial address is reachable from here (security group, network ACL, tunnel).',
          },
        ),
      ),
    target.connectTimeoutMs,
  );
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  const raw: Socket = tcpConnect({ host: target.connectTo.host, port: target.connectTo.port, noDelay: true });
  let secure: TLSSocket | undefined;
  try {
    await once(raw, 'connect', { signal: controller.signal }).catch((err) => {
      throw controller.signal.aborted ? err : unreachable(where, err as NodeJS.ErrnoException);
    });
    raw.setKeepAlive(true, 60_000);
    stage = 'TLS negotiation';
    raw.write(SSL_REQUEST);
    const reply = await negotiationReply(raw, controller.signal, where);
    if (reply !== NegotiationReply.Accept) throw refused(reply, where, target.hints);
    stage = 'TLS handshake';
    secure = tlsConnect({
      socket: raw,
      // SNI carries a name, never an address (RFC 6066).
      ...sni(target),
      secureContext: target.tls,
      rejectUnauthorized: true,
      checkServerIdentity: (_host, cert) =>
        target.checkIdentity ? target.checkIdentity(cert) : checkServerIdentity(target.endpoint.host, cert),
      ALPNProtocols: ['postgresql'],
    });
    await once(secure, 'secureConnect', { signal: controller.signal }).catch((err) => {
      throw controller.signal.aborted ? err : tlsFailure(err as NodeJS.ErrnoException, target);
    });
    return secure;
  } catch (err) {
    secure?.destroy();
    raw.destroy();
    throw controller.signal.aborted ? controller.signal.reason : err;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

/** The SNI name: the target's own, else the endpoint's host unless it is an address. */
function sni(target: UpstreamTarget): { servername?: string } {
  if (target.servername !== undefined) return target.servername === null ? {} : { servername: target.servername };
  return isIP(target.endpoint.host) ? {} : { servername: target.endpoint.host };
}

/** Read the single byte that answers SSLRequest; anything behind an 'S' is an attack (C1, CVE-2021-23222). */
async function negotiationReply(raw: Socket, signal: AbortSignal, where: string): Promise<number> {
  const inbox = new Inbox(raw, 1);
  const stop = () => inbox.fail(signal.reason);
  signal.addEventListener('abort', stop, { once: true });
  try {
    await inbox.fill(1);
  } catch (err) {
    if (signal.aborted) throw err;
    throw new WireError(SqlState.UnableToConnect, `the server at ${where} closed the connection during TLS negotiation`, {
      reason: Failure.UpstreamUnreachable,
      cause: err,
      hint: 'Is the dial address a PostgreSQL server?',
    });
  } finally {
    signal.removeEventListener('abort', stop);
  }
  const bytes = inbox.release();
  if (bytes[0] === NegotiationReply.Accept && bytes.length > 1) {
    throw new WireError(SqlState.ProtocolViolation, `the server at ${where} sent unencrypted data after accepting TLS`, {
      reason: Failure.UpstreamProtocol,
      hint: 'Something between the proxy and the database is tampering with the connection (CVE-2021-23222).',
    });
  }
  return bytes[0]!;
}

function refused(reply: number, where: string, hints: ConnectHints): WireError {
  if (reply === NegotiationReply.Decline) {
    return new WireError(SqlState.UnableToConnect, `the server at ${where} does not accept TLS connections`, {
      reason: Failure.UpstreamNoTls,
      hint: hints.noTls,
    });
  }
  if (reply === NegotiationReply.Error) {
    return new WireError(SqlState.UnableToConnect, `the server at ${where} answered the TLS request with an error`, {
      reason: Failure.UpstreamNoTls,
      detail: 'Its text is not relayed: it came before TLS could prove who sent it (CVE-2024-10977).',
      hint: 'A very old server, or not a PostgreSQL server.',
    });
  }
  return new WireError(
    SqlState.ProtocolViolation,
    `the server at ${where} answered the TLS request with 0x${reply.toString(16).padStart(2, '0')}, not 'S' or 'N'`,
    {
      reason: Failure.UpstreamProtocol,
      hint: 'Is the dial address a PostgreSQL server?',
    },
  );
}

function unreachable(where: string, err: NodeJS.ErrnoException): WireError {
  const hint =
    err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN'
      ? 'The name does not resolve from here: check the endpoint name, or use --connect-to with an address.'
      : "Is the database running, and does its firewall or security group admit this host? With a tunnel, is --connect-to the tunnel's local end?";
  return new WireError(SqlState.UnableToConnect, `could not connect to the server at ${where}: ${err.code ?? err.message}`, {
    reason: Failure.UpstreamUnreachable,
    hint,
    cause: err,
  });
}

function tlsFailure(err: NodeJS.ErrnoException, target: UpstreamTarget): WireError {
  const name = target.endpoint.host;
  if (err.code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new WireError(SqlState.UnableToConnect, `the server's certificate does not match host name "${name}"`, {
      reason: Failure.TlsNameMismatch,
      detail: (err as { reason?: string }).reason,
      hint: target.hints.nameMismatch,
      cause: err,
    });
  }
  if (err.code && UNTRUSTED.has(err.code)) {
    return new WireError(SqlState.UnableToConnect, `the server's certificate is not trusted: ${err.message}`, {
      reason: Failure.TlsUntrusted,
      hint: target.hints.untrusted,
      cause: err,
    });
  }
  return new WireError(SqlState.UnableToConnect, `TLS handshake with the server failed: ${err.code ?? err.message}`, {
    reason: err.code === 'CERT_HAS_EXPIRED' ? Failure.TlsExpired : Failure.TlsFailed,
    detail: err.message,
    cause: err,
  });
}
