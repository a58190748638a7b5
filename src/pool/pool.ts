// Pools of logged-in servers, one per (DB user, startup parameters) of an instance: a client is handed an
// idle server when there is one (no token, no TLS handshake, no login), a new one is opened while the pool
// is under its size, and clients beyond wait in order. Keying on the whole startup packet (database,
// client_encoding, DateStyle, TimeZone, options, application_name...) makes every server in a pool start
// exactly as its clients asked, and the reset query (DISCARD ALL) brings a server back to that start: a
// client's settings hold whichever server it gets and never leak to another.
import type { Logger } from 'pino';
import { HEADER_SIZE, SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { Janitor } from './janitor.js';
import { sendCancel } from '../upstream/cancel.js';
import { openServer, type LoginTarget } from '../upstream/login.js';
import { UpstreamError } from '../upstream/auth.js';
import { type GreetingTemplate, PooledServer } from './server.js';
import { StatementRegistry } from './statements.js';
import { settingsSql } from './params.js';
import { Frontend, frontendMessage } from '../protocol/frontend.js';

export type PoolMode = 'session' | 'transaction';

export interface PoolSettings {
  readonly mode: PoolMode;
  /** Servers per pool. */
  readonly size: number;
  /** Servers per instance, over all its pools; undefined: no limit but the pools'. */
  readonly maxServers: number | undefined;
  /** How long a client may wait for a server before it hears 53300. */
  readonly waitTimeoutMs: number;
  /** An idle server is closed after this long. */
  readonly idleTimeoutMs: number;
  /** A server is closed (when next idle) once it is this old. */
  readonly lifetimeMs: number;
  /** Run between clients; the server must come back idle from it. */
  readonly resetQuery: string;
  /** An idle server unused for longer is checked with an empty query before a client gets it (default 30 s). */
  readonly checkIdleAfterMs?: number | undefined;
  /** Transaction mode: named statements kept prepared per server (least recently used closed first). */
  readonly maxPreparedStatements?: number | undefined;
  /** A client holding its server idle in a transaction (or mid-message) this long is ended; undefined: never. */
  readonly idleTransactionTimeoutMs?: number | undefined;
}

/** What a client holding its server idle in a transaction too long hears (as from PostgreSQL's own timeout). */
export function idleTransactionTimeout(ms: number): WireError {
  return new WireError(SqlState.IdleInTransactionTimeout, 'terminating connection due to idle-in-transaction timeout', {
    reason: Failure.IdleTransaction,
    hint: `The client held its pooled server idle in a transaction for over ${ms / 1000} s (--idle-transaction-timeout).`,
  });
}

/** Statements per server by default (pgbouncer's max_prepared_statements default). */
export const MAX_PREPARED_STATEMENTS = 200;

/** An idle server unused for longer than this is checked with an empty query before a client gets it. */
export const CHECK_IDLE_AFTER_MS = 30_000;

/** What a pool is for (params.ts: poolKeyOf), and what one client of it asks. */
export interface PoolKey {
  /** The pool: DB user, database, and the startup parameters that cannot be SET. */
  readonly id: string;
  readonly user: string;
  readonly database: string;
  /** The StartupMessage sent when a server is opened: every server of the pool starts from it. */
  readonly startup: Buffer;
  /** The client's tracked parameters (application_name, TimeZone, ...): SET on a server lent to it. */
  readonly params: ReadonlyMap<string, Buffer>;
}

/** What the operations side hears (metrics). */
export interface PoolObserver {
  /** A server logged in for the pool of `key`. */
  login(key: PoolKey): void;
  /** A client of the pool of `key` waited this long for a server. */
  waited(key: PoolKey, seconds: number): void;
  /** A login for a new server of the pool of `key` failed. */
  loginFailed?(key: PoolKey): void;
}

/** After a failed login for a pool that has servers, no new one before this (doubled per failure in a row). */
const LOGIN_BACKOFF_MS = 250;
const LOGIN_BACKOFF_MAX_MS = 10_000;

/** At the instance's cap, an idle server of one pool gives way to another pool's waiting client after this long idle. */
const EVICT_GRACE_MS = 500;
/**
 * A client that finds no idle server while one is on its way back (its reset query, a cancel) waits this
 * long for it before a new server is opened: a reset is one round trip, a login a handshake, an IAM token
 * and the server's check of it.
 */
const RETURN_GRACE_MS = 250;

/** A waiting client of a pool that a reload replaced: it waits in the new pools instead. */
const MOVED = new Error('the pool was replaced by a reload');

/** One pool's state, for GET /pools and the pool gauges. */
export interface PoolSnapshot {
  readonly user: string;
  readonly database: string;
  /** Startup parameters that key the pool besides user and database (they cannot be SET), as name=value. */
  readonly keyed: readonly string[];
  readonly mode: PoolMode;
  readonly size: number;
  /** Servers of the instance over all its pools (--max-server-connections), if bounded. */
  readonly maxServers: number | undefined;
  /** Logins for new servers that failed in a row (the pool backs off while it has servers). */
  readonly loginFailures: number;
  readonly servers: { readonly idle: number; readonly active: number; readonly opening: number };
  readonly clients: { readonly active: number; readonly waiting: number };
}

interface Waiter {
  /** When it began to wait (ms since the epoch). */
  readonly since: number;
  /** When its wait times out, on the monotonic clock (performance.now()): a step of the wall clock moves no deadline. */
  readonly deadline: number;
  give(server: PooledServer): void;
  fail(err: Error): void;
}

class Pool {
  readonly idle: PooledServer[] = [];
  readonly active = new Set<PooledServer>();
  readonly waiting: Waiter[] = [];
  /** Logins under way. */
  opening = 0;
  /** Servers a client gave back that are on their way to the pool (reset query, cancels): in `active`. */
  returning = 0;
  /** Idle servers taken out for their check (an empty query) before a client gets them. */
  checking = 0;
  /** Servers held by clients now (active also counts those being reset). */
  lent = 0;
  /** What clients are greeted with: the first server's login (transaction mode greets without a server). */
  template: GreetingTemplate | undefined;
  /** Logins that failed in a row while the pool had servers, and when the next may be tried. */
  failures = 0;
  retryAt = 0;
  retryTimer: NodeJS.Timeout | undefined;
  /** Set while clients wait: the wait timeout's one timer (Pools.expire). */
  expiry: NodeJS.Timeout | undefined;

  constructor(
    readonly id: string,
    readonly key: PoolKey,
  ) {}

  get servers(): number {
    return this.idle.length + this.active.size + this.opening + this.checking;
  }
}

const poolId = (key: PoolKey): string => key.id;

/** The reported-values cache is cleared when it grows past this (clients that vary application_name per request). */
const MAX_REPORTED = 10_000;
/** A reset query that takes a server back to how it started, tracked settings included. */
const FULL_RESET = /\b(discard|reset)\s+all\b/i;
const reportedKey = (name: string, value: Buffer): string => `${name}\0${value.toString('latin1')}`;

/** A greeting with the client's own values of the tracked parameters the server reports, where they differ. */
function withParams(
  template: GreetingTemplate,
  params: ReadonlyMap<string, Buffer>,
  reported: Map<string, Buffer | null>,
): GreetingTemplate {
  if (params.size === 0) return template;
  const own = new Map<string, Buffer>();
  for (const [name, value] of params) {
    const message = reported.get(reportedKey(name, value));
    if (message) own.set(name, message);
  }
  if (own.size === 0) return template;
  const out = template.params.map((message) => {
    const name = message.toString('utf8', HEADER_SIZE, message.indexOf(0, HEADER_SIZE)).toLowerCase();
    const mine = own.get(name);
    own.delete(name);
    return mine ?? message;
  });
  return { ...template, params: [...out, ...own.values()] };
}

export class Pools {
  private readonly pools = new Map<string, Pool>();
  /** How the server reports each tracked value clients asked for (its ParameterStatus; null: not reported). */
  private readonly reported = new Map<string, Buffer | null>();
  private closing = false;
  /** Why servers close as they come back, once closing. */
  private closingReason = 'shutting down';
  /** The pools a reload put in this one's place: its clients get their next servers there. */
  private successor: Pools | undefined;
  /**
   * Transaction mode: the distinct named statements clients hold, shared by all pools of the instance
   * (and by the pools a reload puts in their place: clients keep theirs).
   */
  readonly statements: StatementRegistry;
  /** Closes servers idle too long, or too old, while any are parked. */
  private readonly janitor: Janitor;

  constructor(
    private readonly target: LoginTarget,
    readonly settings: PoolSettings,
    private readonly log: Logger,
    private readonly observer?: PoolObserver,
    statements?: StatementRegistry,
  ) {
    this.statements = statements ?? new StatementRegistry();
    this.janitor = new Janitor((now) => this.sweep(now), Math.min(settings.idleTimeoutMs, settings.lifetimeMs));
  }

  /**
   * The janitor's round: a parked server idle for --server-idle-timeout, or older than --server-lifetime,
   * is closed. Says whether any server is left parked (else the janitor sleeps until one is).
   */
  private sweep(now: number): boolean {
    let parked = false;
    for (const pool of [...this.pools.values()]) {
      for (const server of [...pool.idle]) {
        const why =
          now - server.lastUsedAt >= this.settings.idleTimeoutMs
            ? 'server idle timeout'
            : now - server.createdAt >= this.settings.lifetimeMs
              ? 'server lifetime reached'
              : undefined;
        if (!why) {
          parked = true;
          continue;
        }
        pool.idle.splice(pool.idle.indexOf(server), 1);
        this.retire(pool, server, why);
      }
    }
    return parked;
  }

  /** Servers of the instance, in every pool, open or opening. */
  private get total(): number {
    let n = 0;
    for (const pool of this.pools.values()) n += pool.servers;
    return n;
  }

  private instanceHasRoom(): boolean {
    return this.settings.maxServers === undefined || this.total < this.settings.maxServers;
  }

  /** Whether one more server may be opened for `pool`: under its size and the instance's cap, not backing off. */
  private hasRoom(pool: Pool): boolean {
    return !this.closing && pool.servers < this.settings.size && this.instanceHasRoom() && Date.now() >= pool.retryAt;
  }

  /**
   * A login for a new server failed. With other servers in the pool, its clients wait for one of them
   * (true) while logins back off; with none, the refusal goes to the client that asked (false).
   */
  private loginFailed(pool: Pool, err: unknown, signal?: AbortSignal): boolean {
    this.observer?.loginFailed?.(pool.key);
    if (signal?.aborted || this.closing || pool.servers === 0) return false;
    pool.failures++;
    const backoff = Math.min(LOGIN_BACKOFF_MS * 2 ** (pool.failures - 1), LOGIN_BACKOFF_MAX_MS);
    pool.retryAt = Date.now() + backoff;
    clearTimeout(pool.retryTimer);
    pool.retryTimer = setTimeout(() => this.serveWaiters(), backoff).unref();
    this.log.warn(
      { user: pool.key.user, database: pool.key.database, err, failures: pool.failures, retryMs: backoff, servers: pool.servers },
      "pool: a login for a new server failed; clients wait for the pool's servers",
    );
    return true;
  }

  /**
   * At the instance's cap: close a server of another pool idle for EVICT_GRACE_MS or more, so a client of
   * `pool` gets one (a busy pool, idle between its transactions for a moment, keeps its servers). When
   * none has been idle that long yet, look again when the first will have been.
   */
  private evictIdleElsewhere(pool: Pool): void {
    const now = Date.now();
    let soonest = Infinity;
    for (const other of this.pools.values()) {
      if (other === pool) continue;
      for (const [i, server] of other.idle.entries()) {
        const idleFor = now - server.lastUsedAt;
        if (idleFor < EVICT_GRACE_MS) {
          soonest = Math.min(soonest, EVICT_GRACE_MS - idleFor);
          continue;
        }
        other.idle.splice(i, 1);
        this.retire(other, server, 'another pool needed room (--max-server-connections)');
        return;
      }
    }
    if (soonest < Infinity) this.rebalanceSoon(soonest);
  }

  /** Whether a client of a pool other than `pool`, with room under its size, has waited past the grace. */
  private starving(pool: Pool): boolean {
    const now = Date.now();
    for (const other of this.pools.values()) {
      const first = other.waiting[0];
      if (other !== pool && first && now - first.since >= EVICT_GRACE_MS && other.servers < this.settings.size) return true;
    }
    return false;
  }

  private rebalanceTimer: NodeJS.Timeout | undefined;

  /** In `ms`: pools with waiting clients at the instance's cap take servers idle past the grace from others. */
  private rebalanceSoon(ms: number): void {
    if (this.rebalanceTimer) return;
    this.rebalanceTimer = setTimeout(() => {
      this.rebalanceTimer = undefined;
      for (const pool of this.pools.values()) {
        if (pool.waiting.length > pool.opening && pool.servers < this.settings.size && !this.instanceHasRoom())
          this.evictIdleElsewhere(pool);
      }
    }, ms).unref();
  }

  /** Room came free (a server closed, a login failed): the first waiting clients get new servers. */
  private serveWaiters(): void {
    for (const pool of this.pools.values()) {
      let owed = pool.waiting.length - pool.opening;
      while (owed-- > 0 && this.hasRoom(pool)) {
        this.open(pool, new AbortController().signal).then(
          (fresh) => this.park(pool, fresh),
          (err: Error) => {
            if (!this.loginFailed(pool, err)) pool.waiting[0]?.fail(err);
            this.forgetIfEmpty(pool);
          },
        );
      }
    }
  }

  /** A pool with no server and no client waiting is forgotten: client-chosen parameters must not pile up. */
  private forgetIfEmpty(pool: Pool): void {
    if (pool.servers === 0 && pool.waiting.length === 0 && this.pools.get(pool.id) === pool) this.pools.delete(pool.id);
  }

  /**
   * A logged-in server for `key`: an idle one (checked if idle for long), a new one while there is room,
   * or the next one released, within the wait timeout. `signal`: the client went away.
   */
  async acquire(key: PoolKey, signal: AbortSignal): Promise<PooledServer> {
    if (this.successor) return this.successor.acquire(key, signal);
    if (this.closing) throw new WireError(SqlState.CannotConnectNow, 'pg-iam-proxy is shutting down', { reason: Failure.Shutdown });
    const id = poolId(key);
    let pool = this.pools.get(id);
    if (!pool) this.pools.set(id, (pool = new Pool(id, key)));
    for (let server = pool.idle.pop(); server; server = pool.idle.pop()) {
      pool.checking++;
      const usable = await this.usable(server).finally(() => pool.checking--);
      if (usable) return this.lend(pool, server);
    }
    // At the instance's cap, an idle server of another pool gives way: idle servers of a pool no client
    // uses now must not keep this one's clients waiting.
    if (pool.servers < this.settings.size && !this.instanceHasRoom()) this.evictIdleElsewhere(pool);
    // A server on its way back comes sooner than a new one would: wait for it (a short while).
    if (this.hasRoom(pool) && pool.returning <= pool.waiting.length) {
      try {
        return this.lend(pool, await this.open(pool, signal));
      } catch (err) {
        if (!this.loginFailed(pool, err, signal)) {
          this.serveWaiters();
          this.forgetIfEmpty(pool);
          throw err;
        }
      }
    }
    try {
      return await this.wait(pool, signal, this.hasRoom(pool) ? RETURN_GRACE_MS : undefined);
    } catch (err) {
      if (err === MOVED) return this.successor!.acquire(key, signal);
      throw err;
    }
  }

  /**
   * An idle server of `key`'s pool at once, without waiting or checking, or undefined (then `acquire`).
   * The caller listens to its socket in this same turn: reading goes on uninterrupted.
   */
  tryAcquire(key: PoolKey): PooledServer | undefined {
    if (this.successor) return this.successor.tryAcquire(key);
    const pool = this.pools.get(poolId(key));
    if (!pool || this.closing) return undefined;
    const server = pool.idle.at(-1);
    if (!server || server.broken || Date.now() - server.lastUsedAt >= (this.settings.checkIdleAfterMs ?? CHECK_IDLE_AFTER_MS))
      return undefined;
    pool.idle.pop();
    return this.lend(pool, server, false);
  }

  /**
   * Transaction mode: what a new client of `key` is greeted with, without holding a server. The pool's
   * first login gives it; until there is one, a server is opened (or waited for) and given back untouched.
   */
  async greeting(key: PoolKey, signal: AbortSignal): Promise<GreetingTemplate> {
    if (this.successor) return this.successor.greeting(key, signal);
    let template = this.pools.get(poolId(key))?.template;
    const unseen = [...key.params].some(([name, value]) => !this.reported.has(reportedKey(name, value)));
    if (!template || unseen) {
      // A server sets the client's values first: the server says whether it takes them, and how it
      // reports each (its canonical spelling), as it would at a login with them.
      const server = await this.acquireFor(key, signal);
      if (this.reported.size > MAX_REPORTED) this.reported.clear();
      for (const [name, value] of key.params) this.reported.set(reportedKey(name, value), server.reported(name) ?? null);
      this.release(server, key, 'idle', false);
      template = this.pools.get(poolId(key))?.template ?? server.template();
    }
    return withParams(template, key.params, this.reported);
  }

  /** Session mode: a server with the client's tracked parameters set; rejects (the server given back) if it refuses them. */
  async acquireFor(key: PoolKey, signal: AbortSignal): Promise<PooledServer> {
    const server = await this.acquire(key, signal);
    try {
      await server.track(key.params, this.target.connectTimeoutMs);
    } catch (err) {
      this.release(server, key, 'idle', false);
      throw err;
    }
    return server;
  }

  /**
   * The client is done with `server`. `state` idle: it left the server idle with nothing outstanding, so it
   * is reset and pooled (or given to the next waiting client); busy or gone: it is closed. `reset` false
   * (transaction mode, nothing changed that the next client could see): pooled as it is.
   */
  release(server: PooledServer, key: PoolKey, state: 'idle' | 'busy' | 'gone', reset = true): void {
    const pool = this.pools.get(poolId(key));
    // Lent by the pools that replaced these (a client of before a reload, on its next transaction).
    if (this.successor && !pool?.active.has(server)) {
      this.successor.release(server, key, state, reset);
      return;
    }
    if (!pool) throw new Error(`pool: server ${server.id} released to a pool that never lent it`);
    pool.active.delete(server);
    pool.lent--;
    const old = Date.now() - server.createdAt >= this.settings.lifetimeMs;
    const why =
      state === 'gone' || server.broken
        ? 'it closed or was terminated while held'
        : state === 'busy'
          ? 'the client left it busy'
          : old
            ? 'server lifetime reached'
            : this.closing
              ? this.closingReason
              : undefined;
    if (why) {
      // Left with work outstanding: a query may still run (or a COPY hold its locks) on the backend; the
      // cancel stops it, as closing the connection alone would not until it next wrote.
      if (state === 'busy' && !server.broken) this.cancel(server);
      this.retire(pool, server, why);
      return;
    }
    if (!reset && server.cancelsSettled) {
      // Straight back (transaction mode): parked in this turn, its socket read throughout.
      server.lastUsedAt = Date.now();
      this.park(pool, server);
      return;
    }
    server.socket.pause(); // not listened to until it is parked or reset
    pool.active.add(server); // still ours while it resets, or while a cancel is on its way to it
    pool.returning++;
    const back = (failure?: Error) => {
      pool.active.delete(server);
      pool.returning--;
      if (failure) return this.retire(pool, server, `reset failed: ${failure.message}`);
      server.lastUsedAt = Date.now();
      this.park(pool, server);
    };
    server.whenCancelsDone(() => {
      if (!reset) back();
      else this.reset(server, key).then(() => back(), back);
    });
  }

  /**
   * The reset query; in transaction mode the proxy's statements go too (DISCARD ALL drops them already).
   * A reset that takes the server back to how it started (DISCARD ALL, RESET ALL) sets the tracked values
   * of the client that left again, in the same round trip: the next client is most often the same program,
   * with the same values, and is then lent the server without a query of its own.
   */
  private async reset(server: PooledServer, key: PoolKey): Promise<void> {
    const query = this.settings.resetQuery;
    const full = FULL_RESET.test(query);
    const again = full ? settingsSql(key.params, new Map()) : undefined;
    if (again) {
      // Two Queries in one write (DISCARD ALL cannot share a Query with other statements): one round trip.
      const messages = Buffer.concat([frontendMessage(Frontend.Query, query), frontendMessage(Frontend.Query, again, Buffer.of(0))]);
      await server.run(messages, this.target.connectTimeoutMs, `${query}, then the client's settings`, 2);
    } else await server.run(query, this.target.connectTimeoutMs);
    // Back to how the server started (without the tracked parameters) and the client's values set again,
    // unless the reset query does not say.
    if (full) server.tracked = again ? key.params : new Map();
    else server.trackedUnknown = true;
    if (server.prepared.size === 0 && !server.statementsUnsure) return;
    if (!/^\s*discard\s+all\s*;?\s*$/i.test(query)) await server.run('DEALLOCATE ALL', this.target.connectTimeoutMs);
    server.prepared.clear();
    server.statementsUnsure = false;
  }

  /** Cancel whatever the server's backend runs now (best effort: the server is closed anyway). */
  private cancel(server: PooledServer): void {
    const request = server.cancelRequest();
    if (!request) return;
    sendCancel(this.target.connector, this.target.connectTimeoutMs, () => request).then(
      () => this.log.debug({ server: server.id }, 'pool: query of a departed client cancelled'),
      (err: unknown) => this.log.debug({ server: server.id, err }, 'pool: the cancel for a departed client failed'),
    );
  }

  /**
   * A reload put `successor` in place of these pools: their clients go on, and get their next servers
   * there; idle servers close now, lent ones as they come back.
   */
  replaceWith(successor: Pools): void {
    this.successor = successor;
    this.closing = true;
    this.janitor.stop();
    this.closingReason = 'the configuration was reloaded';
    for (const pool of this.pools.values()) {
      clearTimeout(pool.retryTimer);
      clearTimeout(pool.expiry);
      pool.expiry = undefined;
      for (const server of pool.idle.splice(0)) this.retire(pool, server, 'the configuration was reloaded');
      for (const waiter of pool.waiting.splice(0)) waiter.fail(MOVED);
    }
  }

  /** Close every idle server now; busy ones close as their clients leave. */
  close(): void {
    this.closing = true;
    this.janitor.stop();
    clearTimeout(this.rebalanceTimer);
    for (const pool of this.pools.values()) {
      clearTimeout(pool.retryTimer);
      clearTimeout(pool.expiry);
      pool.expiry = undefined;
      for (const server of pool.idle.splice(0)) this.retire(pool, server, 'shutting down');
      for (const waiter of pool.waiting.splice(0))
        waiter.fail(new WireError(SqlState.CannotConnectNow, 'pg-iam-proxy is shutting down', { reason: Failure.Shutdown }));
    }
  }

  /** Every pool's servers and clients, for GET /pools and the pool gauges. */
  snapshot(): PoolSnapshot[] {
    return [...this.pools.values()].map((pool) => ({
      user: pool.key.user,
      database: pool.key.database,
      keyed: pool.key.id
        .split('\0')
        .slice(3)
        .map((p) => {
          const eq = p.indexOf('=');
          return `${p.slice(0, eq)}=${Buffer.from(p.slice(eq + 1), 'base64').toString('utf8')}`;
        }),
      mode: this.settings.mode,
      size: this.settings.size,
      maxServers: this.settings.maxServers,
      loginFailures: pool.failures,
      servers: { idle: pool.idle.length, active: pool.active.size, opening: pool.opening },
      // In session mode a client holds its server for its whole session.
      clients: { active: pool.lent, waiting: pool.waiting.length },
    }));
  }

  private async open(pool: Pool, signal: AbortSignal): Promise<PooledServer> {
    pool.opening++;
    try {
      const { server, login } = await openServer(this.target, { startup: pool.key.startup, user: pool.key.user, signal, log: this.log });
      if (login.failure) {
        // Refused after AuthenticationOk (no such database): the client hears it as from a 1:1 login.
        server.destroy();
        throw new UpstreamError(login.toClient, SqlState.ConnectionFailure, login.failure);
      }
      this.observer?.login(pool.key);
      pool.failures = 0;
      pool.retryAt = 0;
      // Transaction mode reads into the server's own buffer; in session mode a server is paused and resumed
      // at every client's connect and leave, which on such a socket stops and starts reading in the kernel.
      const pooled = new PooledServer(server, login.backendKey, login.toClient, this.settings.mode === 'transaction');
      pool.template ??= pooled.template();
      this.log.info({ server: pooled.id, user: pool.key.user, database: pool.key.database }, 'pool: server opened');
      return pooled;
    } finally {
      pool.opening--;
    }
  }

  private lend(pool: Pool, server: PooledServer, pause = true): PooledServer {
    server.unwatch(pause);
    pool.active.add(server);
    pool.lent++;
    return server;
  }

  /** A server that may have died while idle: its EOF was noticed, or a quick query tells. */
  private async usable(server: PooledServer): Promise<boolean> {
    if (server.broken) return false;
    if (Date.now() - server.lastUsedAt < (this.settings.checkIdleAfterMs ?? CHECK_IDLE_AFTER_MS)) return true;
    server.unwatch();
    try {
      await server.run('', this.target.connectTimeoutMs);
      return true;
    } catch (err) {
      server.close();
      this.log.info({ server: server.id, err }, 'pool: server closed: it failed its check after a long idle');
      return false;
    }
  }

  /**
   * The next server parked in `pool`, within the wait timeout. `graceMs`: the client waits for a server on
   * its way back while the pool has room; past this, the waiting clients get new servers (serveWaiters).
   */
  private wait(pool: Pool, signal: AbortSignal, graceMs?: number): Promise<PooledServer> {
    // A client gone while its server was being checked: an abort that came first is heard by no listener.
    signal.throwIfAborted();
    return new Promise((resolve, reject) => {
      const began = performance.now(); // monotonic: the wait's length and its deadline
      const grace = graceMs === undefined ? undefined : setTimeout(() => this.serveWaiters(), graceMs);
      const done = () => {
        clearTimeout(grace);
        signal.removeEventListener('abort', onAbort);
        pool.waiting.splice(pool.waiting.indexOf(waiter), 1);
      };
      const waiter: Waiter = {
        since: Date.now(),
        deadline: began + this.settings.waitTimeoutMs,
        give: (server) => {
          done();
          this.observer?.waited(pool.key, (performance.now() - began) / 1000);
          resolve(this.lend(pool, server));
        },
        fail: (err) => {
          done();
          reject(err);
        },
      };
      const onAbort = () => waiter.fail(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      pool.waiting.push(waiter);
      pool.expiry ??= setTimeout(() => this.expire(pool), this.settings.waitTimeoutMs).unref();
      this.log.debug({ user: pool.key.user, database: pool.key.database, waiting: pool.waiting.length }, 'pool: waiting for a server');
    });
  }

  /**
   * The pool's wait timeout: its waiting clients whose time is up hear 53300. One timer per pool, for its
   * first waiter's deadline (all wait as long, in order), not one per wait: a client of transaction pooling
   * may wait at every transaction. Unreferenced: a waiting client's socket keeps the process up.
   */
  private expire(pool: Pool): void {
    pool.expiry = undefined;
    const now = performance.now();
    while (pool.waiting.length > 0 && pool.waiting[0]!.deadline <= now) {
      pool.waiting[0]!.fail(
        new WireError(
          SqlState.TooManyConnections,
          `no server free in the pool for user "${pool.key.user}", database "${pool.key.database}" within ${this.settings.waitTimeoutMs / 1000} s`,
          {
            reason: Failure.PoolTimeout,
            hint: `All ${this.settings.size} servers of the pool are in use (--pool-size). Raise --pool-size or --pool-wait-timeout, or have clients hold servers for less time.`,
          },
        ),
      );
    }
    const next = pool.waiting[0];
    if (next) pool.expiry = setTimeout(() => this.expire(pool), Math.max(1, next.deadline - now)).unref();
  }

  /** Idle: to the first waiting client, else into the pool, watched for its EOF and its idle timeout. */
  private park(pool: Pool, server: PooledServer): void {
    // At the instance's cap, a client of another pool that waited past the grace gets this server's room
    // (this pool keeps its others): no pool starves while another stays busy.
    if (!this.closing && !this.instanceHasRoom() && pool.servers > 1 && this.starving(pool)) {
      this.retire(pool, server, 'another pool needed room (--max-server-connections)');
      return;
    }
    const waiter = pool.waiting[0];
    if (waiter) {
      waiter.give(server);
      return;
    }
    if (this.closing) {
      this.retire(pool, server, this.closingReason);
      return;
    }
    pool.idle.push(server);
    // At the instance's cap, with clients of another pool waiting: this server makes room for theirs if
    // it stays idle past the grace.
    if (!this.instanceHasRoom() && [...this.pools.values()].some((other) => other !== pool && other.waiting.length > 0))
      this.rebalanceSoon(EVICT_GRACE_MS);
    this.log.debug({ server: server.id, user: pool.key.user, database: pool.key.database, idle: pool.idle.length }, 'pool: server idle');
    this.janitor.wake();
    server.watch((why) => {
      const at = pool.idle.indexOf(server);
      if (at < 0) return;
      pool.idle.splice(at, 1);
      this.retire(pool, server, why);
    });
  }

  private retire(pool: Pool, server: PooledServer, why: string): void {
    server.close();
    this.log.info({ server: server.id, user: pool.key.user, database: pool.key.database, reason: why }, 'pool: server closed');
    this.forgetIfEmpty(pool);
    this.serveWaiters();
  }
}
