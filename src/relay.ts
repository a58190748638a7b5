// The seam between a client's session and the way it is served. The session (src/proxy/session.ts)
// reads the client's startup, checks its password and its allow-lists, then asks its instance's Relay
// for a lease and runs it; it knows no relay mode. The 1:1 relay (src/proxy/direct.ts) logs in a server
// of the client's own and splices the two sockets; each pool mode (src/pool/modes.ts names them) lends
// pooled servers. A new mode is a new Relay, not an edit of the session.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { StartupMessage } from './protocol/startup.js';

/** How an instance serves its clients once they are in. */
export interface Relay {
  /**
   * Whether a client that half-closes after its startup keeps its session: the 1:1 relay passes the
   * pipelined bytes and the FIN on (the server answers them); a pooled one ends the session (nobody
   * would read the answers, and the queue for a server must not keep it).
   */
  readonly keepsHalfClosed: boolean;
  /** A server for the client (its own, logged in; or lent by a pool); rejects with a WireError for it. */
  lease(request: LeaseRequest): Promise<Lease>;
}

/** What a relay learns of the client that asks. */
export interface LeaseRequest {
  /** The client's startup packet (its parameters, its database). */
  readonly packet: StartupMessage;
  /** The DB user the server is logged in as (--db-user, or the client's). */
  readonly user: string;
  /** The startup packet sent to the server (the client's, with --db-user's name in it). */
  readonly startup: Buffer;
  /** Aborted when the client goes away or the proxy shuts down: the wait for a server stops. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  /**
   * Make cancels with this BackendKeyData (pid + secret) reach the client's server: without `route`, its
   * own server, with the request as received; with `route`, whichever server the client holds when the
   * cancel comes (with that server's key), if any. Returns the function that forgets the key.
   */
  registerCancel(backendKey: Buffer, route?: () => CancelRoute | undefined): () => void;
}

/** A server a cancel can go to on a pooled client's behalf (a PooledServer). */
export interface CancelRoute {
  /** The CancelRequest with the server's own key. */
  cancelRequest(): Buffer | undefined;
  /** Keep the server from passing to another client until the returned function is called. */
  beginCancel(): () => void;
}

/** A client's server (or its place in a pool), between the login and the relay. */
export interface Lease {
  /** What the client hears before its first query: the login's messages up to ReadyForQuery. */
  readonly toClient: Buffer;
  /** Fields for the session's "opened" log line (which server, who signed). */
  readonly fields: Readonly<Record<string, unknown>>;
  /** The words of that line. */
  readonly opened: string;
  /** The server let the client in, then refused the session (no such database): told, not relayed. */
  readonly refused?: string | undefined;
  /** The client left before hearing of the server: give it back (or close it) untouched. */
  abandon(): void;
  /** Relay until the client or the server goes; never rejects. */
  run(link: RelayLink): Promise<RelayEnd>;
}

/** The client's side of a relay, handed over by the session. */
export interface RelayLink {
  readonly client: Socket;
  /** What the client hears first (the lease's greeting), handed over so the lease need not be kept. */
  readonly toClient: Buffer;
  /** What the client sent behind its startup, read before the relay began. */
  readonly pipelined: Buffer;
  /** The client half-closed behind those bytes. */
  readonly clientEnded: boolean;
  /** Aborted when the client's socket closes or fails. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  /** The proxy is draining: whether now, and a listener for when (one at a time; undefined removes it). */
  readonly drain: Drain;
}

export interface Drain {
  draining(): boolean;
  onDrain(listener: (() => void) | undefined): void;
}

/** How a relay ended, for the session's last log line. */
export interface RelayEnd {
  /** Why, in the words a log reader wants. */
  readonly reason: string;
  readonly error?: Error | undefined;
}
