// One client connection, phase by phase. Every failure is a WireError caught here, written to the
// client as one FATAL ErrorResponse, then a close.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { isLoopback } from '../config.js';
import { formatHostPort } from '../host-port.js';
import { SqlState, TERMINATE_MESSAGE } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { withUser, type CancelRequest, type StartupMessage } from '../protocol/startup.js';
import { type CancelRegistry, forwardCancel } from './cancel.js';
import { readClientStartup, type ClientLink } from './client-startup.js';
import type { ClientTls } from './client-tls.js';
import { authenticateClient, type ScramSecret } from './scram.js';
import { Inbox, InboxClosed } from '../net/inbox.js';
import type { Drain, Lease, Relay } from '../relay.js';
import type { LoginTarget } from '../upstream/login.js';

/** What a session needs from its instance: the login's seams and settings, and the client side's. */
export interface SessionContext extends LoginTarget {
  /** Log in as this DB user whatever the client sends (--db-user). */
  readonly dbUser: string | undefined;
  readonly cancels: CancelRegistry;
  readonly startupTimeoutMs: number;
  readonly log: Logger;
  /** How a client is served once it is in: its own server, spliced (direct.ts), or a pool mode's. */
  readonly relay: Relay;
  /** Answer SSLRequest with 'S' and direct TLS with this certificate; undefined: decline ('N'). */
  readonly clientTls?: ClientTls | Promise<ClientTls> | undefined;
  /** Demand this password (SCRAM-SHA-256) before anything goes upstream. */
  readonly clientPassword?: ScramSecret | undefined;
  /** The DB users (after --db-user) and databases this listener signs for; undefined: any. */
  readonly allowUsers?: readonly string[] | undefined;
  readonly allowDatabases?: readonly string[] | undefined;
  /** Told of each session's outcome (metrics, readiness); never on the per-byte path. */
  readonly observer?: SessionObserver | undefined;
}

export interface SessionObserver {
  /** Logged in upstream: seconds from accept to ReadyForQuery. */
  ready(seconds: number): void;
  /** The session failed before it was ready, and why (the catalogue's name). */
  failed(reason: Failure): void;
}

/** A client let in, with its lease, handed from the startup and login phases to the relay. */
interface Opened {
  readonly lease: Lease;
  readonly pipelined: Buffer;
  /** The client half-closed behind its pipelined bytes. */
  readonly clientEnded: boolean;
}

interface StartupSummary {
  readonly user: string;
  readonly database: string;
  readonly application_name: string | undefined;
  readonly dbUser: string | undefined;
}

/** The single phase value of a session; everything else is derived from it. */
export type Phase = 'startup' | 'login' | 'ready' | 'closed';

/**
 * The reason a session's signal gives when its client has gone: one shared Error, not one per session (an
 * Error's stack is captured when it is made, at a cost every connection would pay). Read, never changed.
 */
const CLIENT_CLOSED = new Error('client closed the connection');

/** Grace for a client to read a FATAL before its socket is destroyed. */
const ERROR_LINGER_MS = 2_000;

export class Session implements Drain {
  phase: Phase = 'startup';
  private readonly started = performance.now();
  private readonly log: Logger;
  /** Aborted when the client goes away: stops upstream work done on its behalf. */
  private readonly gone = new AbortController();
  /** What the client asked for, for the log lines (not the packet: its bytes are not kept). */
  private startup: StartupSummary | undefined;
  /** Set when the proxy ends the session itself (shutdown): the reason logged instead of the socket's. */
  private endedBy: string | undefined;

  constructor(
    private client: Socket,
    private readonly ctx: SessionContext,
    id: number,
    /** Set when the instance is over --max-connections: the client hears 53300 after its startup. */
    private readonly refusal?: WireError,
  ) {
    const address = client.remoteAddress; // the peer, read once (undefined: a unix socket, or a client gone)
    this.log = ctx.log.child({ conn: id, client: `${address ?? 'local'}:${client.remotePort ?? ''}` });
    client.setNoDelay(true);
    // Keepalive finds a peer whose machine or network went away. A loopback peer is on this machine: its
    // kernel closes a dead process's sockets itself, so the probes' system calls buy nothing there.
    if (address !== undefined && !isLoopback(address)) client.setKeepAlive(true, 60_000);
    // Stays for the whole life of the socket: an error between phases must not crash the process.
    client.on('error', (err) => this.gone.abort(err));
    client.on('close', () => this.gone.abort(CLIENT_CLOSED));
  }

  /**
   * End the session from the proxy's side. Before login completes the client hears FATAL 57P01 like a
   * server shutdown; a spliced session is cut (the proxy cannot tell where the server's current message
   * ends), and the reason is logged.
   */
  terminate(reason: string): void {
    this.endedBy ??= reason; // the first reason stands (the grace ran out, then the listeners closed)
    if (this.phase === 'ready') this.client.destroy();
    else if (this.phase !== 'closed') {
      // First stop the work done for the client: a TLS handshake in progress is abandoned (its socket
      // destroyed, so no plaintext FATAL lands inside it), no token is signed, no server dialled.
      this.gone.abort(new Error(reason));
      this.closeWith(new WireError(SqlState.AdminShutdown, `terminating connection: ${reason}`, { reason: Failure.Shutdown }));
    }
  }

  /**
   * The proxy is draining: a client of transaction pooling is let go between transactions (at once when
   * it holds no server); other sessions run on until they end or the grace period is over.
   */
  drain(): void {
    this.drainingNow = true;
    this.drainListener?.();
  }
  private drainingNow = false;
  /** The relay's part of a drain (transaction pooling); a callback, not an AbortSignal: idle sessions stay small. */
  private drainListener: (() => void) | undefined;

  // The session is its relay's Drain (relay.ts): no object or closures of its own per session.
  draining(): boolean {
    return this.drainingNow;
  }
  onDrain(listener: (() => void) | undefined): void {
    this.drainListener = listener;
  }

  /** Serve the client until the session ends; never rejects. */
  async run(): Promise<void> {
    let opened: Opened | undefined;
    try {
      opened = await this.open();
    } catch (err) {
      this.fail(err);
      return;
    }
    if (!opened) return;
    // Only what the relay keeps stays referenced while the session is relayed: everything the startup and
    // login needed was local to open(), and the lease and first bytes are dropped here (an idle session is
    // small).
    const relayed = opened.lease.run({
      client: this.client,
      toClient: opened.lease.toClient,
      pipelined: opened.pipelined,
      clientEnded: opened.clientEnded,
      signal: this.gone.signal,
      log: this.log,
      drain: this,
    });
    opened = undefined;
    const end = await relayed;
    this.close(end.reason, end.error);
  }

  /** Startup, client authentication, login upstream; undefined when the client only sent a cancel. */
  private async open(): Promise<Opened | undefined> {
    const link: ClientLink = { socket: this.client, inbox: new Inbox(this.client), encrypted: false };
    // The TCP peer, read before a TLS upgrade wraps the socket (a direct-TLS socket has no address).
    const address = this.client.remoteAddress;
    // One deadline for everything before the proxy works for the client: packets, TLS, the password. The
    // startup stops at it or when the session ends (a shutdown), a TLS handshake included: one controller
    // for both (AbortSignal.any costs a registry of weak references per connection).
    const stopper = new AbortController();
    const stop = stopper.signal;
    const timer = setTimeout(
      () =>
        stopper.abort(
          new WireError(
            SqlState.ProtocolViolation,
            `the client did not complete its startup within ${this.ctx.startupTimeoutMs / 1000} s`,
            { reason: Failure.StartupTimeout },
          ),
        ),
      this.ctx.startupTimeoutMs,
    );
    const onGone = () => stopper.abort(this.gone.signal.reason);
    if (this.gone.signal.aborted) onGone();
    else this.gone.signal.addEventListener('abort', onGone, { once: true });
    const onStop = () => link.inbox.fail(stop.reason as Error);
    if (stop.aborted) onStop();
    else stop.addEventListener('abort', onStop, { once: true });
    let packet: StartupMessage | CancelRequest;
    try {
      try {
        packet = await readClientStartup(link, this.ctx.clientTls, stop);
      } finally {
        if (link.socket !== this.client) {
          // Upgraded to TLS: from now on everything, an error too, goes over it; and like the raw
          // socket, an error on it must never go unheard.
          this.client = link.socket;
          this.client.on('error', (err) => this.gone.abort(err));
        }
      }
      if (packet.kind === 'startup' && this.ctx.clientPassword) {
        await authenticateClient(this.client, link.inbox, packet.user, this.ctx.clientPassword, { address, signal: stop, log: this.log });
      }
    } finally {
      clearTimeout(timer);
      stop.removeEventListener('abort', onStop);
      this.gone.signal.removeEventListener('abort', onGone);
    }
    const inbox = link.inbox;
    if (packet.kind === 'cancel') {
      inbox.release();
      this.client.destroy();
      await this.cancel(packet);
      return undefined;
    }
    this.startup = { user: packet.user, database: packet.database, application_name: packet.applicationName, dbUser: this.ctx.dbUser };
    this.log.debug({ startup: this.startup, tls: link.encrypted }, 'client startup received');
    if (this.refusal) throw this.refusal;
    this.checkAllowed(packet);
    // Shut down while the client finished its startup: no token, no server for it.
    this.gone.signal.throwIfAborted();
    this.phase = 'login';
    // The client is still read during the login: bytes it pipelines behind its startup wait in the
    // inbox (bounded, B11), and its FIN is seen at once. A client that leaves with nothing (or only a
    // Terminate) pipelined is gone: the login stops, and no server stays logged in for nobody. A pooled
    // client's FIN ends its session whatever it pipelined (nobody would read the answers): it leaves the
    // queue for a server at once.
    const relay = this.ctx.relay;
    const onEnd = () => {
      if (!relay.keepsHalfClosed || isNothingOrTerminate(inbox.buffered)) this.gone.abort(CLIENT_CLOSED);
    };
    this.client.on('end', onEnd);
    const user = this.ctx.dbUser ?? packet.user;
    let lease: Lease;
    try {
      lease = await relay.lease({
        packet,
        user,
        startup: this.ctx.dbUser ? withUser(packet, this.ctx.dbUser) : packet.bytes,
        signal: this.gone.signal,
        log: this.log,
        registerCancel: (backendKey, route) =>
          this.ctx.cancels.register(backendKey, route ? { connector: this.ctx.connector, held: route } : { connector: this.ctx.connector }),
      });
    } finally {
      this.client.off('end', onEnd);
    }
    if (this.gone.signal.aborted) {
      // Served to a client that left before hearing of it.
      lease.abandon();
      throw this.gone.signal.reason;
    }
    const clientEnded = inbox.ended;
    const pipelined = inbox.release();
    this.phase = 'ready';
    const fields = {
      startup: this.startup,
      endpoint: formatHostPort(this.ctx.connector.endpoint),
      readyMs: this.elapsedMs(),
      ...lease.fields,
    };
    if (lease.refused) {
      // Logged in, then refused by the server (no such database, too many connections): not a session.
      this.ctx.observer?.failed(Failure.UpstreamError);
      this.log.info(fields, `server ended the session at startup: ${lease.refused}`);
    } else {
      this.ctx.observer?.ready((performance.now() - this.started) / 1000);
      this.log.info(fields, lease.opened);
    }
    return { lease, pipelined, clientEnded };
  }

  /** The allow-lists: refused before any AWS or upstream work (28000). */
  private checkAllowed(startup: StartupMessage): void {
    const user = this.ctx.dbUser ?? startup.user;
    const { allowUsers, allowDatabases } = this.ctx;
    if (allowUsers && !allowUsers.includes(user)) {
      throw new WireError(SqlState.InvalidAuthorization, `pg-iam-proxy does not sign for user "${user}" on this listener`, {
        reason: Failure.UserNotAllowed,
        hint: 'The listener allows only some DB users (--allow-user / allowUsers).',
      });
    }
    if (allowDatabases && !allowDatabases.includes(startup.database)) {
      throw new WireError(
        SqlState.InvalidAuthorization,
        `pg-iam-proxy does not connect to database "${startup.database}" on this listener`,
        {
          reason: Failure.DatabaseNotAllowed,
          hint: 'The listener allows only some databases (--allow-database / allowDatabases).',
        },
      );
    }
  }

  private async cancel(request: CancelRequest): Promise<void> {
    const target = this.ctx.cancels.lookup(request);
    if (!target) {
      this.log.debug('cancel request for an unknown key: dropped');
      return;
    }
    await forwardCancel(request, target, this.ctx.connectTimeoutMs).then(
      () => this.log.info({ pid: request.pid }, 'cancel request forwarded'),
      (err: unknown) => this.log.warn({ err, pid: request.pid }, 'cancel request could not be forwarded'),
    );
    this.phase = 'closed';
  }

  private fail(err: unknown): void {
    const wire = err instanceof WireError ? err : undefined;
    // A failed or timed-out client TLS handshake destroys the socket itself: still a failure to count.
    const ownFailure = wire?.reason === Failure.ClientTls || wire?.reason === Failure.StartupTimeout;
    // The client hung up (or half-closed) before the session could go on: nothing to tell it.
    if (!ownFailure && (this.client.destroyed || this.gone.signal.aborted || err instanceof InboxClosed)) {
      // A half-closed client is still owed our FIN; closeWith ends quietly (or not at all if gone).
      if (!this.client.destroyed)
        this.closeWith(
          new WireError(SqlState.ConnectionFailure, 'client closed the connection', { reason: Failure.ClientClosed, silent: true }),
        );
      const why = wire ? `client went away during ${this.phase}: ${wire.message}` : `client went away during ${this.phase}`;
      // Gone while the proxy worked upstream for it: counted, since that work was wasted (a client
      // that leaves mid-startup, a port scan or a health check, is not).
      this.close(
        why,
        wire || err instanceof InboxClosed || this.gone.signal.aborted ? undefined : (err as Error),
        this.phase === 'login' && !this.endedBy ? Failure.ClientGone : undefined,
      );
      return;
    }
    if (!wire) {
      // Not a failure the design foresaw: say so plainly rather than leave the client hanging.
      this.log.error({ err }, 'unexpected error in session');
      this.closeWith(new WireError(SqlState.ConnectionFailure, 'pg-iam-proxy internal error', { reason: Failure.Internal }));
      this.close('internal error', err as Error);
      return;
    }
    this.closeWith(wire);
    this.close(wire.message, undefined, wire.reason);
  }

  /** Write the FATAL, let the client read it, then let the socket go. */
  private closeWith(err: WireError): void {
    const client = this.client;
    if (client.destroyed) return; // nothing can be said any more
    client.resume(); // drain what the client still sends, so the close is a FIN, not a reset
    if (err.silent) client.end();
    else client.end(err.toBuffer());
    const linger = setTimeout(() => client.destroy(), ERROR_LINGER_MS);
    client.once('close', () => clearTimeout(linger));
  }

  private close(reason: string, err?: Error, failure?: Failure): void {
    if (this.endedBy) reason = this.endedBy;
    const phase = this.phase;
    this.phase = 'closed';
    const fields = {
      startup: this.startup,
      endpoint: formatHostPort(this.ctx.connector.endpoint),
      phase,
      durationMs: this.elapsedMs(),
      bytes: { fromClient: this.client.bytesRead, toClient: this.client.bytesWritten },
      reason,
      ...(failure ? { failure } : {}),
      ...(err ? { err } : {}),
    };
    if (failure && failure !== Failure.BadStartup && failure !== Failure.ClientGone) this.log.warn(fields, 'session failed');
    else this.log.info(fields, 'session closed');
    if (failure) this.ctx.observer?.failed(failure);
  }

  private elapsedMs(): number {
    return Math.round(performance.now() - this.started);
  }
}

/** What a client that has left may leave behind: nothing, or its Terminate. */
const isNothingOrTerminate = (pipelined: Buffer): boolean => pipelined.length === 0 || pipelined.equals(TERMINATE_MESSAGE);
