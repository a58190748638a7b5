// The engine: one listener per configured instance, sessions counted per instance, a shutdown that
// stops accepting and waits for open sessions up to a deadline.
import { chmodSync, closeSync, constants as fsConstants, fstatSync, openSync } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { once } from 'node:events';
import type { Logger } from 'pino';
import type { Authenticator, Connector, Token } from '../cloud.js';
import { formatHostPort } from '../host-port.js';
import type { InstanceConfig, ProxyConfig } from '../config.js';
import { SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { CancelRegistry } from './cancel.js';
import { RecentRejections } from '../upstream/rejections.js';
import { fileClientTls, generatedClientTls, type ClientTls } from './client-tls.js';
import { ScramSecret } from './scram.js';
import { Session, type SessionContext, type SessionObserver } from './session.js';
import { Pools, type PoolObserver } from '../pool/pool.js';
import { POOL_MODES } from '../pool/modes.js';
import { directRelay } from './direct.js';
import { readPath } from '../net/user-buffer.js';

/** A login rejected with 28000 is tried once more, with a fresh token, after this many ms. */
export const LOGIN_RETRY_DELAY_MS = 250;

/** Tokens a session has used, so that the signed-tokens metric counts each once, for the first instance. */
const countedTokens = new WeakSet<Token>();

/** What the operations side (metrics, readiness) hears from an instance. */
export interface InstanceObserver extends SessionObserver {
  accepted(): void;
  /** A token this instance's session was the first to use: signed for it (shared tokens count once). */
  signed(): void;
  /** A client connection is gone, whatever it was (a session, a cancel request, garbage): its byte counts. */
  closed(fromClient: number, toClient: number): void;
  /** What the instance's pools report, when it pools. */
  readonly pool?: PoolObserver | undefined;
}

export interface EngineDeps {
  /** Metrics for an instance; none by default. */
  readonly observe?: ((instance: Instance) => InstanceObserver) | undefined;
  /** How an instance's password requests are answered (its cloud, its identity). */
  readonly authenticatorFor: (instance: InstanceConfig) => Authenticator;
  /** How an instance is reached over verified TLS, each try bounded by `connectTimeoutMs`. */
  readonly connectorFor: (instance: InstanceConfig, connectTimeoutMs: number) => Connector;
  readonly log: Logger;
}

let nextSessionId = 1;

export class Instance {
  private readonly servers: { tcp?: Server; unix?: Server } = {};
  private readonly sessions = new Map<Socket, Session>();
  /** Sessions' run() promises: close() waits for them, so every session's last log line is written. */
  private readonly running = new Set<Promise<void>>();
  private ctx: SessionContext;
  /** The instance's pools, when it pools: where ctx.relay's servers come from. */
  private pooled: Pools | undefined;
  readonly name: string;
  /** The unix socket's path once listening. */
  socketPath: string | undefined;
  /** The socket file this process bound (device and inode): a reload's chmod touches that file only. */
  private socketFile: { dev: number; ino: number } | undefined;
  /** When a TLS handshake with the endpoint last succeeded (a session's or a probe's), ms since the epoch. */
  lastReachableAt = 0;
  /** Shutting down: open sessions may finish, new clients are told so. */
  private draining = false;

  /** The settings new sessions get (a reload may change them; open sessions keep theirs). */
  config: InstanceConfig;
  private maxConnections: number;
  private readonly observer: InstanceObserver | undefined;

  constructor(
    config: InstanceConfig,
    proxy: ProxyConfig,
    private readonly deps: EngineDeps,
    /** The instance's name in logs and metrics: its endpoint, or endpoint#N when several share one. */
    name = formatHostPort(config.endpoint),
  ) {
    this.name = name;
    this.config = config;
    this.maxConnections = proxy.maxConnections ?? Infinity;
    this.observer = deps.observe?.(this);
    ({ ctx: this.ctx, pools: this.pooled } = this.context(config, proxy, undefined));
    const observer = this.observer;
    const accept = (client: Socket) => {
      const max = this.maxConnections;
      const refusal = this.draining
        ? new WireError(SqlState.CannotConnectNow, 'pg-iam-proxy is shutting down', {
            reason: Failure.Shutdown,
            hint: 'Connect again in a moment: to the new instance of the proxy, once it is up.',
          })
        : this.sessions.size >= max
          ? new WireError(SqlState.TooManyConnections, `sorry, too many clients already (pg-iam-proxy --max-connections ${max})`, {
              reason: Failure.MaxConnections,
            })
          : undefined;
      observer?.accepted();
      const session = new Session(client, this.ctx, nextSessionId++, refusal);
      this.sessions.set(client, session);
      client.once('close', () => {
        this.sessions.delete(client);
        observer?.closed(client.bytesRead, client.bytesWritten);
      });
      const running = session.run();
      this.running.add(running);
      void running.finally(() => this.running.delete(running));
    };
    // allowHalfOpen: a client that shuts down its sending side still gets the server's last replies.
    if (config.listen) this.servers.tcp = createServer({ allowHalfOpen: true, noDelay: true }, accept);
    if (config.unixSocket) this.servers.unix = createServer({ allowHalfOpen: true }, accept);
  }

  /**
   * What this instance's sessions share, from its settings. `previous`: the context a reload replaces: its
   * pools are kept when the pool settings did not change, its local TLS certificate always.
   */
  private context(
    config: InstanceConfig,
    proxy: ProxyConfig,
    previous: { ctx: SessionContext; pools: Pools | undefined } | undefined,
  ): { ctx: SessionContext; pools: Pools | undefined } {
    const deps = this.deps;
    const before = previous?.ctx;
    let ctx: Omit<SessionContext, 'relay'> = {
      connector: deps.connectorFor(config, proxy.connectTimeoutMs),
      auth: deps.authenticatorFor(config),
      connectTimeoutMs: proxy.connectTimeoutMs,
      dbUser: config.dbUser,
      cancels: before?.cancels ?? new CancelRegistry(),
      startupTimeoutMs: proxy.startupTimeoutMs,
      retryDelayMs: LOGIN_RETRY_DELAY_MS,
      rejections: before?.rejections ?? new RecentRejections(),
      log: before?.log ?? deps.log.child({ instance: this.name }),
      allowUsers: config.allowUsers,
      allowDatabases: config.allowDatabases,
    };
    if (config.clientPasswordFile) {
      const { secret, warning } = ScramSecret.fromFile(config.clientPasswordFile);
      if (warning) ctx.log.warn(warning);
      ctx = { ...ctx, clientPassword: secret };
    }
    if (config.clientTls.mode === 'files') ctx = { ...ctx, clientTls: fileClientTls(config.clientTls.cert, config.clientTls.key) };
    else if (config.clientTls.mode === 'auto' && before) {
      // The process's one generated certificate: kept from before, or taken now (off or files before).
      const made = this.config.clientTls.mode === 'auto' ? before.clientTls : this.generated?.();
      if (made) ctx = { ...ctx, clientTls: made };
    }
    const observer = this.observer;
    if (observer) {
      ctx = {
        ...ctx,
        // The metrics hear of each token the first time a login gets it, beside the authenticator, which
        // is the cloud's own, whole (a wrapper re-listing its methods once left out Cloud SQL's refuseUser).
        tokenHad: (token) => {
          if (countedTokens.has(token)) return;
          countedTokens.add(token);
          observer.signed();
        },
        observer: {
          ready: (seconds) => {
            this.lastReachableAt = Date.now();
            observer.ready(seconds);
          },
          failed: (reason) => observer.failed(reason),
        },
      };
    }
    // Pooled: servers are lent to clients from the pools (made after the metrics wrap: a pool's logins
    // count too), by the pool mode's relay; else each client logs in a server of its own.
    if (!config.pool) return { ctx: { ...ctx, relay: directRelay(ctx) }, pools: undefined };
    const old = previous?.pools;
    const pools =
      old && settingsKey(old.settings) === settingsKey(config.pool) && !this.loginChanged(config, proxy)
        ? old
        : new Pools(ctx, config.pool, ctx.log, observer?.pool, old?.statements);
    return { ctx: { ...ctx, relay: pools === old ? previous!.ctx.relay : POOL_MODES[config.pool.mode](pools) }, pools };
  }

  /**
   * Whether a new configuration logs in differently (a pool's servers would not be what it says). What
   * only concerns clients (who may connect, how they reach the proxy) leaves the servers as they are.
   */
  private loginChanged(config: InstanceConfig, proxy: ProxyConfig): boolean {
    const old = this.config;
    return settingsKey(old, CLIENT_SIDE) !== settingsKey(config, CLIENT_SIDE) || this.ctx.connectTimeoutMs !== proxy.connectTimeoutMs;
  }

  /**
   * A reload changed this instance's settings: new sessions get them; open sessions keep theirs. Pools
   * whose settings changed are replaced, the old ones drained (idle servers closed at once). The new
   * settings are made ready first (files read); the returned function puts them in place.
   */
  prepare(config: InstanceConfig, proxy: ProxyConfig, quiet = false): () => void {
    // Everything that can fail (a file read) happens here; what is returned only swaps it in.
    const previous = { ctx: this.ctx, pools: this.pooled };
    const next = this.context(config, proxy, previous);
    const socketMode = this.socketModeChange(config);
    return () => {
      socketMode?.();
      this.ctx = next.ctx;
      this.pooled = next.pools;
      this.config = config;
      this.maxConnections = proxy.maxConnections ?? Infinity;
      // Replaced pools: their clients go on, and get their next servers from the new ones.
      if (previous.pools && previous.pools !== next.pools) {
        if (next.pools) previous.pools.replaceWith(next.pools);
        else previous.pools.close();
      }
      if (!quiet) next.ctx.log.info('configuration reloaded: new sessions get the new settings');
    };
  }

  /**
   * A reload that changes `unixSocketMode`: the socket file is chmod-ed when the reload goes in (a mode
   * left wider than the file says would let in users it no longer names). The file is reached through a
   * descriptor opened without following symlinks and checked to be the socket this process bound, so a
   * symlink or another file swapped in at the path is never changed. Where that cannot be done (no
   * O_PATH: not Linux), the reload is refused, saying why.
   */
  private socketModeChange(config: InstanceConfig): (() => void) | undefined {
    const path = this.socketPath;
    const mode = config.unixSocket?.mode;
    if (!path || mode === undefined || mode === this.config.unixSocket?.mode) return undefined;
    const chmod = () => {
      const fd = openBound(path, this.socketFile);
      try {
        chmodSync(`/proc/self/fd/${fd}`, mode);
      } finally {
        closeSync(fd);
      }
    };
    // Everything that can fail is tried now, with nothing changed.
    closeSync(openBound(path, this.socketFile));
    return () => {
      try {
        chmod();
        this.ctx.log.info({ unixSocket: path, mode: `0${mode.toString(8)}` }, 'unix socket mode changed');
      } catch (err) {
        /* c8 ignore next 2 -- the file checked a moment before went away or changed: said, not hidden */
        this.ctx.log.error({ err, unixSocket: path }, `cannot change the unix socket's mode: ${(err as Error).message}`);
      }
    };
  }

  /** The instance's pools, when it pools (GET /pools, the pool gauges). */
  get pools(): Pools | undefined {
    return this.pooled;
  }

  /** Bytes of the sessions open now (closed ones were reported to the observer). */
  liveBytes(): { fromClient: number; toClient: number } {
    let fromClient = 0;
    let toClient = 0;
    for (const client of this.sessions.keys()) {
      fromClient += client.bytesRead;
      toClient += client.bytesWritten;
    }
    return { fromClient, toClient };
  }

  /** A TCP + TLS handshake with the endpoint, nothing sent after (readiness). */
  async probe(): Promise<void> {
    const socket = await this.ctx.connector.connect();
    socket.destroy();
    this.lastReachableAt = Date.now();
  }

  /** Number of client connections open, in any phase. */
  get connections(): number {
    return this.sessions.size;
  }

  /** The process's generated certificate (--client-tls auto), for a reload that turns it on. */
  private generated: (() => Promise<ClientTls>) | undefined;

  /** Listen on TCP and/or the unix socket; resolves to the TCP address when there is one. */
  async listen(generated?: () => Promise<ClientTls>): Promise<AddressInfo | undefined> {
    this.generated = generated;
    if (this.config.clientTls.mode === 'auto' && generated) {
      // Made once every listener is up (Engine.listen); a client's SSLRequest waits for it (a few ms, once).
      const made = generated();
      made.catch(
        (err: Error) =>
          err !== NOT_STARTED && this.ctx.log.error({ err }, 'cannot make the local TLS certificate: TLS clients are refused'),
      );
      this.ctx = { ...this.ctx, clientTls: made };
    }
    const { tcp, unix } = this.servers;
    let address: AddressInfo | undefined;
    if (tcp && this.config.listen) {
      const { host, port } = this.config.listen;
      tcp.listen({ host, port });
      await once(tcp, 'listening');
      address = tcp.address() as AddressInfo;
    }
    if (unix && this.config.unixSocket) {
      const { dir, mode } = this.config.unixSocket;
      // libpq's name for a port's socket; a TCP listener on port 0 lends its real port.
      const port = this.config.unixSocket.port || address?.port || 5432;
      const path = join(dir, `.s.PGSQL.${port}`);
      await removeStaleSocket(path);
      // Created with the configured mode by the umask around the bind (which listen() does at once): no
      // chmod afterwards, which would follow a symlink swapped in meanwhile.
      const umask = process.umask(~mode & 0o777);
      try {
        unix.listen({ path });
      } finally {
        process.umask(umask);
      }
      await once(unix, 'listening');
      this.socketPath = path;
      const bound = await lstat(path);
      this.socketFile = { dev: bound.dev, ino: bound.ino };
    }
    this.ctx.log.info(
      {
        ...(address ? { listen: formatHostPort({ host: address.address, port: address.port }) } : {}),
        ...(this.socketPath ? { unixSocket: this.socketPath } : {}),
        connectTo: formatHostPort(this.config.connectTo),
        region: this.config.region,
        ...(this.config.pool
          ? { poolMode: this.config.pool.mode, poolSize: this.config.pool.size, maxServerConnections: this.config.pool.maxServers }
          : {}),
      },
      'listening',
    );
    return address;
  }

  /**
   * Drain: the sessions open now get up to `graceMs` to end, then are closed. Clients arriving meanwhile
   * are told the proxy is shutting down (57P03, as PostgreSQL says it in its own shutdown): a listener
   * closed at once would instead reset whatever waited in its backlog, a failure with no words. Resolves
   * to the number of sessions the grace cut short.
   */
  async close(graceMs: number): Promise<number> {
    this.draining = true;
    let cutShort = 0;
    // Idle pooled servers go at once; servers held by clients go as their clients leave.
    this.pooled?.close();
    const open = [...this.sessions];
    for (const [, session] of open) session.drain();
    if (open.length > 0) {
      const drained = Promise.all(open.map(([client]) => new Promise((resolve) => client.once('close', resolve))));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)));
      if (await Promise.race([drained.then(() => false), timedOut])) {
        const left = open.filter(([client]) => this.sessions.has(client));
        cutShort = left.length;
        this.ctx.log.warn({ open: left.length }, `${left.length} connection(s) still open after waiting ${graceMs / 1000} s: closing them`);
        for (const [, session] of left) session.terminate(`pg-iam-proxy is shutting down: the ${graceMs / 1000} s grace period is over`);
      }
      clearTimeout(timer);
    }
    const servers = [this.servers.tcp, this.servers.unix].filter((s): s is Server => s?.listening === true);
    const closed = Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    // Whoever arrived during the drain and has not finished its startup: told, and let go.
    for (const session of this.sessions.values()) session.terminate('pg-iam-proxy is shutting down');
    await closed;
    await Promise.all(this.running);
    return cutShort;
  }
}

/**
 * A socket file left by a crashed run is replaced; one a live process listens on is not (EADDRINUSE),
 * and neither is anything that is not a socket.
 */
async function removeStaleSocket(path: string): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (!stat) return;
  if (!stat.isSocket()) throw Object.assign(new Error(`${path} exists and is not a socket: not replacing it`), { code: 'EEXIST' });
  // Only a refused connection means nobody listens: a full backlog (EAGAIN) or a socket we may not
  // open (EACCES) belongs to a live process, whose socket must not be removed.
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect({ path }, () => (probe.destroy(), resolve(true)));
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
  });
  if (live) throw Object.assign(new Error(`another process is listening on ${path}`), { code: 'EADDRINUSE' });
  await unlink(path);
}

/** Linux's O_PATH: a descriptor naming a file (a socket too) without opening it for reading or writing. */
const O_PATH = 0o10000000;

/**
 * A descriptor for the socket file this process bound at `path`, reached without following a symlink;
 * throws, saying why, when that cannot be had or the file is another.
 */
function openBound(path: string, bound: { dev: number; ino: number } | undefined): number {
  const unchangeable = (why: string) =>
    new Error(`unixSocketMode cannot be changed on ${path} while listening (${why}): restart pg-iam-proxy to apply it`);
  /* c8 ignore next -- only where Node has no O_NOFOLLOW or /proc (not Linux) */
  if (process.platform !== 'linux' || !bound) throw unchangeable('changing it safely needs Linux');
  let fd: number;
  try {
    fd = openSync(path, O_PATH | fsConstants.O_NOFOLLOW);
  } catch (err) {
    throw unchangeable((err as NodeJS.ErrnoException).code ?? (err as Error).message);
  }
  const stat = fstatSync(fd);
  if (!stat.isSocket() || stat.dev !== bound.dev || stat.ino !== bound.ino) {
    closeSync(fd);
    throw unchangeable('the file there is no longer the socket this process made');
  }
  return fd;
}

/** A stable text of settings (Maps as their entries), for telling whether a reload changed them. */
/** Settings of an instance that concern only its clients, not how its servers log in. */
const CLIENT_SIDE = ['pool', 'listen', 'unixSocket', 'unixSocketMode', 'clientTls', 'clientPasswordFile', 'allowUsers', 'allowDatabases'];

export function settingsKey(value: unknown, omit: readonly string[] = []): string {
  return JSON.stringify(value, (key, v: unknown) => (omit.includes(key) ? undefined : v instanceof Map ? [...v] : v));
}

/** What a reload did, instance by instance. */
export interface ReloadOutcome {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly changed: readonly string[];
  readonly unchanged: readonly string[];
}

/** An instance's identity across reloads: its listeners (no two instances share one). */
const listenerKey = (config: InstanceConfig): string =>
  `${config.listen ? formatHostPort(config.listen) : ''}|${config.unixSocket ? `${config.unixSocket.dir}:${config.unixSocket.port}` : ''}`;

/** Why the local certificate was never made: another listener failed to start. */
const NOT_STARTED = new Error('the proxy did not start');

/** All instances of one process. */
export class Engine {
  private list: Instance[];
  /** The local certificate every --client-tls auto instance shares (made once the listeners are up). */
  private generated: (() => Promise<ClientTls>) | undefined;
  /** Instances a reload removed, still draining: a shutdown waits for them too; their names stay taken. */
  private readonly leaving = new Set<Promise<void>>();
  private readonly retired = new Set<Instance>();
  private closing = false;

  constructor(
    public config: ProxyConfig,
    private readonly deps: EngineDeps,
  ) {
    const names = config.instances.map((instance) => formatHostPort(instance.endpoint));
    this.list = config.instances.map((instance, i) => {
      const shared = names.filter((n) => n === names[i]).length > 1;
      const name = shared ? `${names[i]}#${names.slice(0, i + 1).filter((n) => n === names[i]).length}` : names[i];
      return new Instance(instance, config, deps, name);
    });
  }

  get instances(): readonly Instance[] {
    return this.list;
  }

  /**
   * SIGHUP: the configuration read again. Instances are matched by their listeners: one added starts
   * listening, one removed stops accepting and drains like a shutdown, one changed gives new sessions
   * its new settings; the sessions of the others are not touched. Resolves once the new listeners are up.
   */
  async reload(next: ProxyConfig): Promise<ReloadOutcome> {
    if (this.closing) throw new Error('shutting down: not reloaded');
    const outcome = { added: [] as string[], removed: [] as string[], changed: [] as string[], unchanged: [] as string[] };
    const byKey = new Map(next.instances.map((config) => [listenerKey(config), config]));
    // What the instances' contexts take from the process: a change there changes every instance.
    const shared = (c: ProxyConfig) => settingsKey([c.connectTimeoutMs, c.startupTimeoutMs, c.maxConnections]);
    const processChanged = shared(this.config) !== shared(next);
    // First everything that can fail, with nothing changed: new contexts (files are read), new instances.
    const removed: Instance[] = [];
    const commits: Array<() => void> = [];
    const kept: Instance[] = [];
    for (const instance of this.list) {
      const config = byKey.get(listenerKey(instance.config));
      if (!config) {
        removed.push(instance);
        continue;
      }
      byKey.delete(listenerKey(config));
      kept.push(instance);
      // Files named by the settings (CA bundle, client certificate, password) are read again: they may
      // have been replaced at the same path.
      const files = config.caFile !== undefined || config.clientPasswordFile !== undefined || config.clientTls.mode === 'files';
      if (!processChanged && settingsKey(config) === settingsKey(instance.config)) {
        outcome.unchanged.push(instance.name);
        if (files) commits.push(instance.prepare(config, next, true));
      } else {
        commits.push(instance.prepare(config, next));
        outcome.changed.push(instance.name);
      }
    }
    const taken = new Set([...this.list, ...this.retired].map((instance) => instance.name));
    const added: Instance[] = [];
    for (const config of byKey.values()) {
      const base = formatHostPort(config.endpoint);
      let name = base;
      for (let n = 2; taken.has(name); n++) name = `${base}#${n}`;
      taken.add(name);
      added.push(new Instance(config, next, this.deps, name));
    }
    // Then the new listeners: one that cannot listen undoes them all (nothing else has changed yet).
    try {
      for (const instance of added) await instance.listen(this.generated);
    } catch (err) {
      await Promise.all(added.map((instance) => instance.close(0)));
      throw err;
    }
    // From here nothing fails: the changes go in.
    for (const commit of commits) commit();
    for (const instance of removed) {
      outcome.removed.push(instance.name);
      this.retired.add(instance);
      const leaving = instance
        .close(next.shutdownGraceMs)
        .then(() => this.deps.log.info({ instance: instance.name }, 'stopped listening: removed from the configuration'));
      this.leaving.add(leaving);
      void leaving.finally(() => {
        this.leaving.delete(leaving);
        this.retired.delete(instance);
      });
    }
    outcome.added.push(...added.map((instance) => instance.name));
    this.config = next;
    this.list = [...kept, ...added];
    return outcome;
  }

  async listen(): Promise<Array<AddressInfo | undefined>> {
    const addresses: Array<AddressInfo | undefined> = [];
    let up!: () => void;
    let failed!: (err: Error) => void;
    const listening = new Promise<void>((resolve, reject) => ((up = resolve), (failed = reject)));
    listening.catch(() => undefined);
    try {
      // One certificate serves every instance with --client-tls auto, made once every listener is up
      // (loading the x509 code first would delay them); a TLS client arriving earlier waits for it.
      let made: Promise<ClientTls> | undefined;
      const generated = () => (made ??= listening.then(() => generatedClientTls()));
      this.generated = generated;
      for (const instance of this.instances) addresses.push(await instance.listen(generated));
      const reads = readPath();
      this.deps.log.debug(
        { reads: reads.kind, ...(reads.kind === 'stream' ? { why: reads.why } : {}) },
        reads.kind === 'user-buffer' ? 'the splice reads into buffers of its own' : 'the splice reads through Node streams',
      );
    } catch (err) {
      // A client that reached a listener already up must not wait for a certificate never to be made.
      failed(NOT_STARTED);
      await this.close(0);
      throw err;
    }
    up();
    return addresses;
  }

  /** Every instance drained (see Instance.close); resolves to the number of sessions the grace cut short. */
  async close(graceMs = this.config.shutdownGraceMs): Promise<number> {
    this.closing = true;
    const [cutShort] = await Promise.all([Promise.all(this.list.map((instance) => instance.close(graceMs))), Promise.all(this.leaving)]);
    return cutShort.reduce((sum, n) => sum + n, 0);
  }
}
