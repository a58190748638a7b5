// One client connection, phase by phase. Every failure is a WireError caught here, written to the
// client as one FATAL ErrorResponse, then a close.
import type { Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { TLSSocket } from 'node:tls';
import { formatHostPort } from '../host-port.js';
import { scopeKey, type IamToken, type TokenScope, type TokenSource } from '../aws/tokens.js';
import { NoCredentialsError } from '../aws/identity.js';
import { redactSecrets } from '../log.js';
import { SqlState } from '../protocol/constants.js';
import { WireError } from '../protocol/errors.js';
import { withUser, type CancelRequest, type StartupMessage } from '../protocol/startup.js';
import { CancelRegistry, forwardCancel } from './cancel.js';
import { readClientStartup, type ClientLink } from './client-startup.js';
import type { ClientTls } from './client-tls.js';
import { authenticateClient, type ScramSecret } from './scram.js';
import { Inbox, InboxClosed } from './inbox.js';
import { splice } from './splice.js';
import { connectUpstream, type UpstreamTarget } from './upstream-connect.js';
import { IamRejected, loginUpstream, type LoginResult } from './upstream-auth.js';
import type { RecentRejections, Rejections } from './rejections.js';

/** What a session needs from its instance. */
export interface SessionContext {
  readonly target: UpstreamTarget;
  readonly region: string;
  /** Log in as this DB user whatever the client sends (--db-user). */
  readonly dbUser: string | undefined;
  readonly tokens: TokenSource;
  readonly cancels: CancelRegistry;
  readonly startupTimeoutMs: number;
  /** A login whose token was rejected is tried once more, with a fresh token, after this delay. */
  readonly retryDelayMs: number;
  /** Tokens refused lately, per endpoint and user: then no retry (one IAM check per client). */
  readonly rejections: RecentRejections;
  readonly log: Logger;
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
  /** The session failed before it was ready; `reason` is the stable WireError reason. */
  failed(reason: string): void;
}

/** A logged-in session, handed from the startup and login phases to the splice. */
interface Opened {
  readonly server: TLSSocket;
  readonly toClient: Buffer;
  readonly pipelined: Buffer;
  /** The client half-closed behind its pipelined bytes: the server gets them, then our FIN. */
  readonly clientEnded: boolean;
  /** Drops the session's cancel key. */
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
    this.endedBy = reason;
    if (this.phase === 'ready') this.client.destroy();
    else if (this.phase !== 'closed') {
      // First stop the work done for the client: a TLS handshake in progress is abandoned (its socket
      // destroyed, so no plaintext FATAL lands inside it), no token is signed, no server dialled.
      this.gone.abort(new Error(reason));
      this.closeWith(new WireError(SqlState.AdminShutdown, `terminating connection: ${reason}`, { reason: 'shutdown' }));
    }
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
    // Only the two sockets stay referenced while the session is spliced: everything the startup and
    // login needed was local to open() and is garbage now (an idle session is small).
    const { server, forget } = opened;
    const spliced = splice(this.client, server, opened.toClient, opened.pipelined, opened.clientEnded);
    opened = undefined;
    const end = await spliced;
    forget();
    this.close(end.reason, end.error);
  }

  /** Startup, client authentication, login upstream; undefined when the client only sent a cancel. */
  private async open(): Promise<Opened | undefined> {
    const link: ClientLink = { socket: this.client, inbox: new Inbox(this.client), encrypted: false };
    // The TCP peer, read before a TLS upgrade wraps the socket (a direct-TLS socket has no address).
    const address = this.client.remoteAddress;
    // One deadline for everything before the proxy works for the client: packets, TLS, the password.
    const deadline = new AbortController();
    const timer = setTimeout(
      () => deadline.abort(new WireError(SqlState.ProtocolViolation, `the client did not complete its startup within ${this.ctx.startupTimeoutMs / 1000} s`, { reason: 'startup_timeout' })),
      this.ctx.startupTimeoutMs,
    );
    // The startup stops at the deadline or when the session ends (a shutdown), a TLS handshake included.
    const stop = AbortSignal.any([deadline.signal, this.gone.signal]);
    const onStop = () => link.inbox.fail(stop.reason as Error);
    stop.addEventListener('abort', onStop, { once: true });
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
    // Terminate) pipelined is gone: the login stops, and no server stays logged in for nobody.
    const onEnd = () => {
      if (isNothingOrTerminate(inbox.buffered)) this.gone.abort(new Error('client closed the connection'));
    };
    this.client.on('end', onEnd);
    let login: LoginResult;
    let server: TLSSocket;
    try {
      ({ server, login } = await this.login(packet));
    } finally {
      this.client.off('end', onEnd);
    }
    if (this.gone.signal.aborted) {
      server.destroy();
      throw this.gone.signal.reason;
    }
    const clientEnded = inbox.ended;
    const pipelined = inbox.release();
    const forget = login.backendKey && !login.failure ? this.ctx.cancels.register(login.backendKey, this.ctx.target) : () => undefined;
    this.phase = 'ready';
    const fields = {
      startup: this.startup,
      endpoint: formatHostPort(this.ctx.target.endpoint),
      readyMs: this.elapsedMs(),
      ...(login.token ? { accessKeyId: login.token.accessKeyId } : { auth: 'none' }),
    };
    if (login.failure) {
      // Logged in, then refused by the server (no such database, too many connections): not a session.
      this.ctx.observer?.failed('upstream_error');
      this.log.info(fields, `server ended the session at startup: ${login.failure}`);
    } else {
      this.ctx.observer?.ready((performance.now() - this.started) / 1000);
      this.log.info(fields, login.token ? 'session opened' : 'session opened: the server asked for no password, so no token was sent');
    }
    return { server, toClient: login.toClient, pipelined, clientEnded, forget };
  }

  /** The allow-lists: refused before any AWS or upstream work (28000). */
  private checkAllowed(startup: StartupMessage): void {
    const user = this.ctx.dbUser ?? startup.user;
    const { allowUsers, allowDatabases } = this.ctx;
    if (allowUsers && !allowUsers.includes(user)) {
      throw new WireError(SqlState.InvalidAuthorization, `pg-iam-proxy does not sign for user "${user}" on this listener`, {
        reason: 'user_not_allowed',
        hint: 'The listener allows only some DB users (--allow-user / allowUsers).',
      });
    }
    if (allowDatabases && !allowDatabases.includes(startup.database)) {
      throw new WireError(SqlState.InvalidAuthorization, `pg-iam-proxy does not connect to database "${startup.database}" on this listener`, {
        reason: 'database_not_allowed',
        hint: 'The listener allows only some databases (--allow-database / allowDatabases).',
      });
    }
  }

  private async cancel(request: CancelRequest): Promise<void> {
    const target = this.ctx.cancels.lookup(request);
    if (!target) {
      this.log.debug('cancel request for an unknown key: dropped');
      return;
    }
    await forwardCancel(request, target).then(
      () => this.log.info({ pid: request.pid }, 'cancel request forwarded'),
      (err: unknown) => this.log.warn({ err, pid: request.pid }, 'cancel request could not be forwarded'),
    );
    this.phase = 'closed';
  }

  /**
   * Connect and log in. A rejected token is tried once more, fresh, after a short delay, while the client
   * has heard nothing (D6; an overloaded instance may refuse a valid token) — unless tokens for this
   * endpoint and user were refused within the last minute: then each client costs one IAM check.
   */
  private async login(startup: StartupMessage): Promise<{ server: TLSSocket; login: LoginResult }> {
    const user = this.ctx.dbUser ?? startup.user;
    const bytes = this.ctx.dbUser ? withUser(startup, this.ctx.dbUser) : startup.bytes;
    const scope: TokenScope = { host: this.ctx.target.endpoint.host, port: this.ctx.target.endpoint.port, region: this.ctx.region, user };
    const key = scopeKey(scope);
    const { rejections } = this.ctx;
    // Known before this client's first try: a retry would only add another check to a refusal.
    const known = rejections.recent(key);
    const tried: TriedToken[] = [];
    for (;;) {
      const startedAt = Date.now();
      try {
        const result = await this.attempt(scope, bytes, tried.at(-1)?.token);
        if (result.login.token) rejections.clear(key);
        return result;
      } catch (err) {
        if (!(err instanceof IamRejected)) throw err;
        const fresh = err.token.signedAt >= startedAt;
        tried.push({ token: err.token, fresh });
        rejections.note(key);
        if (tried.length > 1 || known) throw this.explainRejection(err, scope, tried, known);
        this.log.debug({ accessKeyId: err.token.accessKeyId, fresh }, 'IAM token rejected; retrying once with a fresh one');
        await delay(this.ctx.retryDelayMs, undefined, { signal: this.gone.signal });
      }
    }
  }

  /**
   * One try: the token (a cache hit in the steady state) is had while the connection is made, and the
   * whole try, credentials included, is bounded by the connect timeout.
   */
  private async attempt(scope: TokenScope, bytes: Buffer, notThis: IamToken | undefined): Promise<{ server: TLSSocket; login: LoginResult }> {
    this.gone.signal.throwIfAborted();
    const ms = this.ctx.target.connectTimeoutMs;
    let tokenSettled = false;
    let passwordAsked = false;
    const token = this.token(scope, notThis).finally(() => (tokenSettled = true));
    token.catch(() => undefined);
    const controller = new AbortController();
    let server: TLSSocket | undefined;
    const timer = setTimeout(() => {
      if (!tokenSettled && (!server || passwordAsked)) controller.abort(this.credentialsTimeout(ms));
      // Still connecting: connectUpstream's own timer, a moment later, names the stage that stalled.
      else if (server) controller.abort(new WireError(SqlState.UnableToConnect, `timed out after ${ms / 1000} s waiting for the server to complete the login`, { reason: 'upstream_timeout' }));
    }, ms);
    const onGone = () => controller.abort(this.gone.signal.reason);
    this.gone.signal.addEventListener('abort', onGone, { once: true });
    try {
      server = await connectUpstream(this.ctx.target, controller.signal);
      const login = await loginUpstream(server, bytes, {
        user: scope.user,
        token: () => ((passwordAsked = true), token),
        signal: controller.signal,
      });
      return { server, login };
    } catch (err) {
      server?.destroy();
      throw controller.signal.aborted ? controller.signal.reason : err;
    } finally {
      clearTimeout(timer);
      this.gone.signal.removeEventListener('abort', onGone);
    }
  }

  private credentialsTimeout(ms: number): WireError {
    const who = this.ctx.tokens.label ?? 'the configured identity';
    return new WireError(SqlState.UnableToConnect, `pg-iam-proxy got no AWS credentials for ${who} within ${ms / 1000} s`, {
      reason: 'credentials_timeout',
      hint: 'The credential source is slow or hanging (credential_process, SSO, instance metadata, STS). The proxy keeps trying; check that `aws sts get-caller-identity` answers quickly where the proxy runs, with the same profile or role, or raise --connect-timeout.',
    });
  }

  private async token(scope: TokenScope, notThis: IamToken | undefined): Promise<IamToken> {
    try {
      return await this.ctx.tokens.get(scope, notThis);
    } catch (err) {
      const tried = err instanceof NoCredentialsError && err.tried.length > 0 ? err.describeTried() : undefined;
      throw new WireError(SqlState.UnableToConnect, `pg-iam-proxy could not sign an IAM token: ${redactSecrets((err as Error).message)}`, {
        reason: 'no_credentials',
        ...(tried ? { detail: `Sources tried, in order: ${tried}.` } : {}),
        hint: 'Check that `aws sts get-caller-identity` works where the proxy runs, with the same profile or role. The proxy keeps serving and signs as soon as credentials can be had.',
        cause: err,
      });
    }
  }

  /**
   * An IAM rejection keeps the server's words and adds what only the proxy knows (DESIGN.md "Errors"):
   * what was signed, which tokens were tried and how fresh they were, and the causes to check. The
   * access key is shortened: enough for an operator to match, little for whoever reaches the listener.
   */
  private explainRejection(err: IamRejected, scope: TokenScope, tried: readonly TriedToken[], known: Rejections | undefined): WireError {
    const { token } = err;
    const quoted = `"${scope.user.replaceAll('"', '""')}"`;
    const now = Date.now();
    const what = tried.map((t) => (t.fresh ? 'a token signed for this login' : `a cached token signed ${Math.round((now - t.token.signedAt) / 1000)} s earlier`));
    const why = known
      ? ` It was not tried again: the server refused tokens for this endpoint and user ${known.count} time${known.count === 1 ? '' : 's'} in the last ${this.ctx.rejections.windowMs / 1000} s, the last ${Math.round((now - known.lastAt) / 1000)} s ago.`
      : '';
    return new WireError(SqlState.InvalidAuthorization, err.message, {
      reason: 'iam_rejected',
      detail:
        `pg-iam-proxy signed with access key ${shortKey(token.accessKeyId)} for ${scope.host}:${scope.port}, region ${scope.region}, user ${quoted}. ` +
        `The server rejected ${what.join(', then ')}.${why}`,
      hint: [
        `Check, most likely first: 1) the user is granted rds_iam (GRANT rds_iam TO ${quoted};).`,
        `2) The signing identity may rds-db:connect to arn:aws:rds-db:${scope.region}:<account-id>:dbuser:<DbiResourceId or cluster-resource-id>/${scope.user} (AmazonRDSFullAccess does not grant it).`,
        '3) IAM database authentication is enabled on the instance or cluster.',
        `4) ${scope.host} is the exact instance, cluster, reader or RDS Proxy endpoint (never an IP, CNAME or custom endpoint).`,
        '5) The signing identity is the one you expect (`aws sts get-caller-identity`).',
        '6) This machine\'s clock is right (tokens are valid for 15 minutes from signing).',
        `7) The user name's case matches the database role exactly (${quoted}).`,
      ].join(' '),
    });
  }

  private fail(err: unknown): void {
    const wire = err instanceof WireError ? err : undefined;
    // A failed or timed-out client TLS handshake destroys the socket itself: still a failure to count.
    const ownFailure = wire?.reason === 'client_tls' || wire?.reason === 'startup_timeout';
    // The client hung up (or half-closed) before the session could go on: nothing to tell it.
    if (!ownFailure && (this.client.destroyed || this.gone.signal.aborted || err instanceof InboxClosed)) {
      // A half-closed client is still owed our FIN; closeWith ends quietly (or not at all if gone).
      if (!this.client.destroyed) this.closeWith(new WireError(SqlState.ConnectionFailure, 'client closed the connection', { reason: 'client_closed', silent: true }));
      const why = wire ? `client went away during ${this.phase}: ${wire.message}` : `client went away during ${this.phase}`;
      // Gone while the proxy worked upstream for it: counted, since that work was wasted (a client
      // that leaves mid-startup, a port scan or a health check, is not).
      this.close(why, wire || err instanceof InboxClosed || this.gone.signal.aborted ? undefined : (err as Error), this.phase === 'login' && !this.endedBy ? 'client_gone' : undefined);
      return;
    }
    if (!wire) {
      // Not a failure the design foresaw: say so plainly rather than leave the client hanging.
      this.log.error({ err }, 'unexpected error in session');
      this.closeWith(new WireError(SqlState.ConnectionFailure, 'pg-iam-proxy internal error', { reason: 'internal' }));
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

  private close(reason: string, err?: Error, failure?: string): void {
    if (this.endedBy) reason = this.endedBy;
    const phase = this.phase;
    this.phase = 'closed';
    const fields = {
      startup: this.startup,
      endpoint: formatHostPort(this.ctx.target.endpoint),
      phase,
      durationMs: this.elapsedMs(),
      bytes: { fromClient: this.client.bytesRead, toClient: this.client.bytesWritten },
      reason,
      ...(failure ? { failure } : {}),
      ...(err ? { err } : {}),
    };
    if (failure && failure !== 'bad_startup' && failure !== 'client_gone') this.log.warn(fields, 'session failed');
    else this.log.info(fields, 'session closed');
    if (failure) this.ctx.observer?.failed(failure);
  }


  private elapsedMs(): number {
    return Math.round(performance.now() - this.started);
  }
}

/** A token tried for this login, and whether it was signed for it (or reused from the cache). */
interface TriedToken {
  readonly token: IamToken;
  readonly fresh: boolean;
}

/** AKIA…WXYZ: enough to tell keys apart. */
const shortKey = (id: string): string => (id.length > 8 ? `${id.slice(0, 4)}…${id.slice(-4)}` : id);

/** Terminate ('X', length 4): a client that says goodbye. */
const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);

/** What a client that has left may leave behind: nothing, or its Terminate. */
const isNothingOrTerminate = (pipelined: Buffer): boolean => pipelined.length === 0 || pipelined.equals(TERMINATE);

