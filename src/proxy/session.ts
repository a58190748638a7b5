// One client connection, phase by phase. Every failure is a WireError caught here, written to the
// client as one FATAL ErrorResponse, then a close.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { TLSSocket } from 'node:tls';
import { formatHostPort } from '../host-port.js';
import { BackendCode, SqlState, TERMINATE_MESSAGE } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { withUser, type CancelRequest, type StartupMessage } from '../protocol/startup.js';
import { type CancelRegistry, forwardCancel } from './cancel.js';
import { readClientStartup, type ClientLink } from './client-startup.js';
import type { ClientTls } from './client-tls.js';
import { authenticateClient, type ScramSecret } from './scram.js';
import { Inbox, InboxClosed } from './inbox.js';
import { splice } from './splice.js';
import { randomBytes } from 'node:crypto';
import { backendKeyData, decodeBackendKey } from '../protocol/backend.js';
import type { PoolKey, Pools } from '../pool/pool.js';
import { poolKeyOf } from '../pool/params.js';
import { ClientSettings } from '../pool/client-settings.js';
import { relayPooled } from '../pool/relay.js';
import { type GreetingTemplate, greeting, type PooledServer } from '../pool/server.js';
import { type Holding, relayTransactions } from '../pool/transaction.js';
import { openServer, type LoginTarget } from './login.js';
import type { LoginResult } from './upstream-auth.js';

/** What a session needs from its instance: the login's seams and settings, and the client side's. */
export interface SessionContext extends LoginTarget {
  /** Log in as this DB user whatever the client sends (--db-user). */
  readonly dbUser: string | undefined;
  readonly cancels: CancelRegistry;
  readonly startupTimeoutMs: number;
  readonly log: Logger;
  /** Pooling (--pool-mode session|transaction): servers are lent from here instead of logged in per client. */
  readonly pools?: Pools | undefined;
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

/** A logged-in session, handed from the startup and login phases to the relay. */
interface Opened {
  /** The server: the session's own (spliced byte for byte), or one lent by the pool. */
  readonly upstream:
    | { readonly kind: 'spliced'; readonly server: TLSSocket }
    | { readonly kind: 'pooled'; readonly server: PooledServer; readonly key: PoolKey }
    | { readonly kind: 'transaction'; readonly key: PoolKey; readonly holding: Holding; readonly template: GreetingTemplate };
  readonly toClient: Buffer;
  readonly pipelined: Buffer;
  /** The client half-closed behind its pipelined bytes: the server gets them, then our FIN. */
  readonly clientEnded: boolean;
  /** Drops the session's cancel key. */
  readonly forget: () => void;
}

/**
 * A pooled server lent to this client (session mode) or the holding it will be lent through (transaction
 * mode), with the greeting it hears and how to drop its cancel key.
 */
interface Lent {
  readonly server?: PooledServer;
  readonly holding?: Holding;
  /** Transaction mode: what the greeting was made of (the client's own values included). */
  readonly template?: GreetingTemplate;
  readonly toClient: Buffer;
  readonly forget: () => void;
}

interface StartupSummary {
  readonly user: string;
  readonly database: string;
  readonly application_name: string | undefined;
  readonly dbUser: string | undefined;
}

/** The single phase value of a session; everything else is derived from it. */
export type Phase = 'startup' | 'login' | 'ready' | 'closed';

/** Grace for a client to read a FATAL before its socket is destroyed. */
const ERROR_LINGER_MS = 2_000;

export class Session {
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
    this.log = ctx.log.child({ conn: id, client: `${client.remoteAddress ?? 'local'}:${client.remotePort ?? ''}` });
    client.setNoDelay(true);
    client.setKeepAlive(true, 60_000);
    // Stays for the whole life of the socket: an error between phases must not crash the process.
    client.on('error', (err) => this.gone.abort(err));
    client.on('close', () => this.gone.abort(new Error('client closed the connection')));
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
    this.draining = true;
    this.onDrain?.();
  }
  private draining = false;
  /** The relay's part of a drain (transaction pooling); a callback, not an AbortSignal: idle sessions stay small. */
  private onDrain: (() => void) | undefined;

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
    // Only the two sockets stay referenced while the session is relayed: everything the startup and
    // login needed was local to open() and is garbage now (an idle session is small).
    const { upstream, forget } = opened;
    if (upstream.kind === 'spliced') {
      const spliced = splice(this.client, upstream.server, opened.toClient, opened.pipelined, opened.clientEnded);
      opened = undefined;
      const end = await spliced;
      forget();
      this.close(end.reason, end.error);
      return;
    }
    if (upstream.kind === 'transaction') {
      const relayed = relayTransactions({
        client: this.client,
        pools: this.ctx.pools!,
        key: upstream.key,
        signal: this.gone.signal,
        drain: { draining: () => this.draining, onDrain: (listener) => (this.onDrain = listener) },
        holding: upstream.holding,
        toClient: opened.toClient,
        pipelined: opened.pipelined,
        clientEnded: opened.clientEnded,
        greeted: () => ClientSettings.greetedIn(Buffer.concat(upstream.template.params)),
        log: this.log,
      });
      opened = undefined;
      const end = await relayed;
      forget();
      this.close(end.reason, end.error);
      return;
    }
    const relayed = relayPooled(this.client, upstream.server.socket, opened.toClient, opened.pipelined, opened.clientEnded, {
      idleTransactionTimeoutMs: this.ctx.pools!.settings.idleTransactionTimeoutMs,
      settings: new ClientSettings(upstream.key.params, () => ClientSettings.greetedIn(Buffer.concat(upstream.server.template().params))),
      server: upstream.server,
    });
    opened = undefined;
    const end = await relayed;
    forget();
    this.ctx.pools!.release(upstream.server, upstream.key, end.serverGone ? 'gone' : end.serverIdle ? 'idle' : 'busy');
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
    const onEnd = () => {
      if (this.ctx.pools || isNothingOrTerminate(inbox.buffered)) this.gone.abort(new Error('client closed the connection'));
    };
    this.client.on('end', onEnd);
    const user = this.ctx.dbUser ?? packet.user;
    const startup = this.ctx.dbUser ? withUser(packet, this.ctx.dbUser) : packet.bytes;
    if (this.ctx.pools) {
      const key = poolKeyOf(packet, user);
      let lent: Lent;
      try {
        lent = this.ctx.pools.settings.mode === 'transaction' ? await this.attach(key) : await this.borrow(key);
      } finally {
        this.client.off('end', onEnd);
      }
      if (this.gone.signal.aborted) {
        // Lent to a client that left before hearing of it: untouched, so it goes straight back.
        lent.forget();
        if (lent.server) this.ctx.pools.release(lent.server, key, 'idle');
        throw this.gone.signal.reason;
      }
      this.phase = 'ready';
      this.ctx.observer?.ready((performance.now() - this.started) / 1000);
      this.log.info(
        {
          startup: this.startup,
          endpoint: formatHostPort(this.ctx.connector.endpoint),
          readyMs: this.elapsedMs(),
          ...(lent.server ? { pooled: lent.server.id } : { pooled: 'transaction' }),
        },
        'session opened from the pool',
      );
      return {
        upstream: lent.server
          ? { kind: 'pooled', server: lent.server, key }
          : { kind: 'transaction', key, holding: lent.holding!, template: lent.template! },
        toClient: lent.toClient,
        forget: lent.forget,
        clientEnded: inbox.ended,
        pipelined: inbox.release(),
      };
    }
    let login: LoginResult;
    let server: TLSSocket;
    try {
      ({ server, login } = await openServer(this.ctx, { startup, user, signal: this.gone.signal, log: this.log }));
    } finally {
      this.client.off('end', onEnd);
    }
    if (this.gone.signal.aborted) {
      server.destroy();
      throw this.gone.signal.reason;
    }
    const clientEnded = inbox.ended;
    const pipelined = inbox.release();
    const forget =
      login.backendKey && !login.failure ? this.ctx.cancels.register(login.backendKey, { connector: this.ctx.connector }) : () => undefined;
    this.phase = 'ready';
    const fields = {
      startup: this.startup,
      endpoint: formatHostPort(this.ctx.connector.endpoint),
      readyMs: this.elapsedMs(),
      ...(login.token ? login.token.signer : { auth: 'none' }),
    };
    if (login.failure) {
      // Logged in, then refused by the server (no such database, too many connections): not a session.
      this.ctx.observer?.failed(Failure.UpstreamError);
      this.log.info(fields, `server ended the session at startup: ${login.failure}`);
    } else {
      this.ctx.observer?.ready((performance.now() - this.started) / 1000);
      this.log.info(fields, login.token ? 'session opened' : 'session opened: the server asked for no password, so no token was sent');
    }
    return { upstream: { kind: 'spliced', server }, toClient: login.toClient, pipelined, clientEnded, forget };
  }

  /**
   * A server from the pool, and the greeting the client gets instead of a login. The client's cancel key
   * is the proxy's own (a server passes from client to client: an old key must never reach a new
   * client's query); a cancel with it goes to the server this client holds, with the server's key.
   */
  private async borrow(key: PoolKey): Promise<Lent> {
    const server = await this.ctx.pools!.acquireFor(key, this.gone.signal);
    // A cancel that arrives late (its connection made after this client let the server go) must not reach
    // the query of the server's next client: the target asks whether this client still holds it.
    let held = true;
    const { keyData, unregister } = this.proxyKey(server.backendKey?.length ?? 8, () => (held ? server : undefined));
    const forget = () => {
      held = false;
      unregister();
    };
    return { server, toClient: server.greeting(keyData), forget };
  }

  /**
   * Transaction mode: the greeting, with no server held (the pool's first login gave its values); a
   * cancel goes to whichever server the client holds when it comes, if any.
   */
  private async attach(key: PoolKey): Promise<Lent> {
    const template = await this.ctx.pools!.greeting(key, this.gone.signal);
    const holding: Holding = { server: undefined };
    const { keyData, unregister } = this.proxyKey(template.keyLength, () => holding.server);
    return { holding, template, toClient: greeting(template, keyData), forget: unregister };
  }

  /**
   * The BackendKeyData a pooled client gets: the proxy's own (a server passes from client to client, so
   * an old key must never reach a new client's query), as long as the server's (4-byte secret in protocol
   * 3.0, longer only where the server's is), registered so a cancel with it goes where `held` says.
   */
  private proxyKey(length: number, held: () => PooledServer | undefined): { keyData: Buffer; unregister: () => void } {
    const bytes = randomKeyBytes(length);
    const keyData = backendKeyData(bytes.readUInt32BE(0) & 0x7fff_ffff || 1, bytes.subarray(4));
    const unregister = this.ctx.cancels.register(decodeBackendKey({ code: BackendCode.BackendKeyData, bytes: keyData }), {
      connector: this.ctx.connector,
      held,
    });
    return { keyData, unregister };
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

/** What a client that has left may leave behind: nothing, or its Terminate. */
const isNothingOrTerminate = (pipelined: Buffer): boolean => pipelined.length === 0 || pipelined.equals(TERMINATE_MESSAGE);
