// The operations endpoint: /healthz (the process serves), /readyz (credentials in hand, every endpoint
// reached over TLS recently, not draining), /metrics (Prometheus text).
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { formatHostPort, type HostPort } from '../aws/endpoint.js';
import type { Identities } from '../aws/identity.js';
import type { Proxy } from '../proxy/server.js';
import type { Metrics } from './metrics.js';

export interface OpsOptions {
  readonly proxy: Proxy;
  readonly identities: Identities;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** An endpoint counts as reachable for this long after a TLS handshake with it. */
  readonly reachableForMs?: number;
  /** How often an endpoint no session has reached lately is probed (TCP + TLS, nothing sent). */
  readonly probeEveryMs?: number;
}

export class OpsServer {
  private readonly server: Server;
  private draining = false;
  private probing: NodeJS.Timeout | undefined;
  private readonly reachableForMs: number;
  private readonly probeEveryMs: number;

  constructor(private readonly options: OpsOptions) {
    this.reachableForMs = options.reachableForMs ?? 60_000;
    this.probeEveryMs = options.probeEveryMs ?? 20_000;
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const state = this.readiness();
        res.writeHead(state.ready ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(state)}\n`);
      } else if (path === '/metrics') {
        options.metrics.registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': options.metrics.registry.contentType }).end(text),
          /* c8 ignore next -- prom-client's collectors do not fail */
          (err: Error) => res.writeHead(500).end(err.message),
        );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz or /metrics\n');
      }
    });
  }

  async listen(address: HostPort): Promise<AddressInfo> {
    this.server.listen({ host: address.host, port: address.port });
    await once(this.server, 'listening');
    const bound = this.server.address() as AddressInfo;
    this.options.log.info({ http: formatHostPort({ host: bound.address, port: bound.port }) }, 'health and metrics listening');
    this.probe();
    return bound;
  }

  /** From now on /readyz answers 503: the load balancer stops sending, sessions drain. */
  drain(): void {
    this.draining = true;
  }

  readiness() {
    const now = Date.now();
    const credentials = this.options.identities.all().map((identity) => ({ identity: identity.label, ok: identity.holder.peek() !== undefined }));
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
      instance.probe().catch((err: Error) => this.options.log.warn({ instance: instance.name, err }, `endpoint not reachable over TLS: ${err.message}`));
    }
    this.probing = setTimeout(() => this.probe(), this.probeEveryMs).unref();
  }

  async close(): Promise<void> {
    clearTimeout(this.probing);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
