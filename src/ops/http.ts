// The operations endpoint: /healthz (the process serves), /startup (listening with credentials in hand,
// once: a startup probe), /readyz (credentials in hand, every endpoint reached over TLS recently, not
// draining), /metrics (Prometheus text), /pools (each pool's servers and clients, when an instance pools),
// and POST /quitquitquit (the shutdown a signal starts; from loopback peers only: another container of
// the pod, never the kubelet or the network).
//
// Anyone who reaches the port may call it (in Kubernetes it listens on the pod IP for the kubelet), so
// it is built for strangers: every connection has a few seconds to ask and a few seconds of silence,
// there are never more than a few dozen at once, and nothing it says names who signs (identities are
// numbers). Pools are named by their DB user and database, as their metrics are: the README says so.
import { createServer, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from 'pino';
import { formatHostPort, type HostPort } from '../host-port.js';
import { isLoopback } from '../config.js';
import type { Identities } from '../aws/identity.js';
import type { CloudCredentials } from '../clouds/credentials.js';
import type { Engine } from '../proxy/engine.js';
import type { Metrics } from './metrics.js';

/**
 * The HTTP listener's limits. Its clients are the kubelet (probes time out after 1 s by default and open
 * a connection per probe), Prometheus (one request every 15 s or more) and load balancer health checks:
 * each sends its whole request the moment it connects and is done in milliseconds.
 */
export const HTTP_LIMITS = {
  /**
   * From accepting a connection (for a later request on it: from its first byte) to the end of the
   * request's headers. 5 s is thousands of times what a probe needs, and room for a GC pause or a loaded
   * node; it bounds a client that sends its headers a byte at a time (each byte resets the idle timer).
   */
  headersTimeoutMs: 5_000,
  /**
   * No byte either way for this long and the connection is closed: before the first request, or between
   * keep-alive requests (Node adds 1 s to the keep-alive time it advertises, to avoid racing the client).
   * A scraper's next request comes after its 15 s+ interval, so it reconnects anyway; nothing is lost.
   */
  idleTimeoutMs: 5_000,
  /**
   * Connections open at once. The callers above make a handful; 32 is several times that and far below
   * any descriptor limit the proxy can run with (at 200, ~25 for the process and 32 here leave ~140 for
   * the database side, 2 per session). A fixed number rather than one derived from RLIMIT_NOFILE: Node
   * cannot read the limit (only /proc/self/limits, on Linux only), and a fixed cap is the same everywhere.
   */
  maxConnections: 32,
} as const;

export interface OpsOptions {
  readonly proxy: Engine;
  readonly identities: Identities;
  /** Azure's and Cloud SQL's tokens: ready when each cloud in use has one. */
  readonly clouds?: CloudCredentials | undefined;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** An endpoint counts as reachable for this long after a TLS handshake with it. */
  readonly reachableForMs?: number;
  /** How often an endpoint no session has reached lately is probed (TCP + TLS, nothing sent). */
  readonly probeEveryMs?: number;
  /** See HTTP_LIMITS. */
  readonly headersTimeoutMs?: number;
  /** See HTTP_LIMITS. */
  readonly idleTimeoutMs?: number;
  /** See HTTP_LIMITS. */
  readonly maxConnections?: number;
  /** POST /quitquitquit from a loopback peer: start the shutdown. */
  readonly quit?: (() => void) | undefined;
}

/** How long between two warnings that the HTTP listener is full: one is news, a flood of them is not. */
const FULL_WARNING_EVERY_MS = 60_000;

export class OpsServer {
  private readonly server: Server;
  private draining = false;
  /** Listening, with every identity's credentials in hand at least once: /startup stays 200 from then on. */
  private startedUp = false;
  private probing: NodeJS.Timeout | undefined;
  private readonly reachableForMs: number;
  private readonly probeEveryMs: number;
  private readonly maxConnections: number;
  /** Open HTTP connections, the one that asked least recently first, each with its requests being answered. */
  private readonly connections = new Map<Socket, number>();
  private lastFullWarningAt = -Infinity;

  constructor(private readonly options: OpsOptions) {
    this.reachableForMs = options.reachableForMs ?? 60_000;
    this.probeEveryMs = options.probeEveryMs ?? 20_000;
    this.maxConnections = options.maxConnections ?? HTTP_LIMITS.maxConnections;
    const headersTimeout = options.headersTimeoutMs ?? HTTP_LIMITS.headersTimeoutMs;
    const idleTimeout = options.idleTimeoutMs ?? HTTP_LIMITS.idleTimeoutMs;
    this.server = createServer(
      {
        headersTimeout,
        // GET and HEAD carry no body, so a whole request is its headers; other methods get 405 at once
        // and no longer to send a body than the headers had.
        requestTimeout: headersTimeout,
        keepAliveTimeout: idleTimeout,
        // How often Node looks for connections past headersTimeout (its default, 30 s, would let one live
        // 7 times as long as asked); a walk over at most maxConnections entries.
        connectionsCheckingInterval: Math.min(1_000, headersTimeout),
      },
      (req, res) => {
        // Re-inserted, so the map runs from the connection silent longest to the one that asked last.
        const socket = req.socket;
        const answering = this.connections.get(socket) ?? 0;
        this.connections.delete(socket);
        this.connections.set(socket, answering + 1);
        res.once('close', () => {
          const left = this.connections.get(socket);
          if (left !== undefined) this.connections.set(socket, left - 1);
        });
        this.answer(req.method, (req.url ?? '/').split('?')[0]!, res, socket.remoteAddress ?? '');
      },
    );
    // Silence for idleTimeout, before or between requests: Node destroys the socket (no 'timeout' listener).
    this.server.timeout = idleTimeout;
    this.server.on('connection', (socket: Socket) => this.admit(socket));
  }

  private answer(method: string | undefined, path: string, res: ServerResponse, peer: string): void {
    const { metrics } = this.options;
    if (path === '/quitquitquit' && this.options.quit) {
      this.quitQuitQuit(this.options.quit, method, res, peer);
    } else if (method !== 'GET' && method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/startup') {
      this.startedUp ||= this.readiness().credentials.every((c) => c.ok);
      res.writeHead(this.startedUp ? 200 : 503, { 'content-type': 'text/plain' }).end(this.startedUp ? 'started\n' : 'starting\n');
    } else if (path === '/readyz') {
      const state = this.readiness();
      res.writeHead(state.ready ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(state)}\n`);
    } else if (path === '/pools') {
      // Every pool of every pooling instance: its user and database, its servers and clients by state.
      const pools = this.options.proxy.instances.filter((i) => i.pools).map((i) => ({ instance: i.name, pools: i.pools!.snapshot() }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(pools)}\n`);
    } else if (path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        /* c8 ignore next -- prom-client's collectors do not fail */
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /startup, /readyz, /metrics or /pools\n');
    }
  }

  /**
   * POST only (a GET from a crawler or a misdirected probe must not end the proxy), and from a loopback
   * peer only: the listener is on the pod IP for the kubelet, and no one beyond the pod may stop it. The
   * shutdown starts once the answer is written, so the caller hears it even when the process ends at once.
   */
  private quitQuitQuit(quit: () => void, method: string | undefined, res: ServerResponse, peer: string): void {
    if (method !== 'POST') {
      res.writeHead(405, { allow: 'POST' }).end();
    } else if (!isLoopback(peer)) {
      this.options.log.warn({ peer }, 'POST /quitquitquit refused: only a loopback peer may stop the proxy');
      res.writeHead(403, { 'content-type': 'text/plain' }).end('forbidden: only a loopback peer may stop the proxy\n');
    } else {
      res.once('finish', () => quit());
      res.writeHead(200, { 'content-type': 'text/plain' }).end('shutting down\n');
    }
  }

  /**
   * At the cap, the connection silent longest with no request being answered makes room: a flood of
   * silent connections cannot lock the kubelet out, since each newcomer pushes the stalest out and a
   * probe asks the moment it connects. When every connection is being answered, the newcomer is closed.
   * Either way at once: at most one descriptor above the cap, for one turn of the event loop.
   */
  private admit(socket: Socket): void {
    if (this.connections.size >= this.maxConnections) {
      const idle = [...this.connections].find(([, answering]) => answering === 0)?.[0];
      this.warnFull(idle !== undefined);
      if (idle === undefined) {
        socket.destroy();
        return;
      }
      this.connections.delete(idle);
      idle.destroy();
    }
    this.connections.set(socket, 0);
    socket.once('close', () => this.connections.delete(socket));
  }

  private warnFull(evicted: boolean): void {
    const now = Date.now();
    if (now - this.lastFullWarningAt < FULL_WARNING_EVERY_MS) return;
    this.lastFullWarningAt = now;
    this.options.log.warn(
      { maxConnections: this.maxConnections },
      `HTTP connections at the cap (${this.maxConnections}): ${evicted ? 'closing the one idle longest' : 'refusing a new one'}; something holds connections open (said at most once a minute)`,
    );
  }

  async listen(address: HostPort): Promise<AddressInfo> {
    this.server.listen({ host: address.host, port: address.port });
    await once(this.server, 'listening');
    const bound = this.server.address() as AddressInfo;
    // /readyz names identities by number only; this line (for operators) says which number is which.
    const identities = Object.fromEntries(this.options.identities.all().map((identity) => [identity.ref, identity.label]));
    this.options.log.info({ http: formatHostPort({ host: bound.address, port: bound.port }), identities }, 'health and metrics listening');
    this.probe();
    return bound;
  }

  /** From now on /readyz answers 503: the load balancer stops sending, sessions drain. */
  drain(): void {
    this.draining = true;
  }

  /**
   * What /readyz tells anyone who asks. Identities are "#1", "#2"... (in config order, as in the
   * listening log line): a role ARN names the account and the role to attack, a profile name the
   * machine's setup, and an operator needs neither to see which one is missing. Instances keep their
   * names (endpoint host:port, as in the metrics): they say which database is unreachable, and the
   * endpoint name is in public DNS anyway.
   */
  readiness() {
    const now = Date.now();
    const credentials = this.options.identities
      .all()
      .map((identity) => ({ identity: identity.ref, ok: identity.holder.peek() !== undefined }))
      .concat((this.options.clouds?.all() ?? []).map(([cloud, tokens]) => ({ identity: cloud, ok: tokens.peek() !== undefined })));
    const instances = this.options.proxy.instances.map((instance) => ({
      instance: instance.name,
      ok: now - instance.lastReachableAt <= this.reachableForMs,
      ...(instance.lastReachableAt ? { lastReachedSecondsAgo: Math.round((now - instance.lastReachableAt) / 1000) } : {}),
    }));
    const ready = !this.draining && credentials.every((c) => c.ok) && instances.every((i) => i.ok);
    return { ready, draining: this.draining, credentials, instances };
  }

  /** Handshake with each endpoint no session reached lately; again every `probeEveryMs`. */
  private probe(): void {
    const now = Date.now();
    for (const instance of this.options.proxy.instances) {
      if (now - instance.lastReachableAt < this.probeEveryMs) continue;
      instance
        .probe()
        .catch((err: Error) => this.options.log.warn({ instance: instance.name, err }, `endpoint not reachable over TLS: ${err.message}`));
    }
    this.probing = setTimeout(() => this.probe(), this.probeEveryMs).unref();
  }

  async close(): Promise<void> {
    clearTimeout(this.probing);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
