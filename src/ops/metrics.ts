// Prometheus metrics (DESIGN.md names), fed by the engine's observers: nothing on the per-byte path.
// Bytes are summed at scrape time from the open sessions plus the totals of the closed ones.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { Failure } from '../protocol/errors.js';
import type { InstanceObserver, Instance } from '../proxy/engine.js';

export class Metrics {
  readonly registry = new Registry();
  private readonly instances = new Set<Instance>();
  private readonly closedBytes = new Map<string, { fromClient: number; toClient: number }>();

  private readonly connections = new Counter({
    name: 'pg_iam_proxy_connections_total',
    help: 'Client connections accepted.',
    labelNames: ['instance'],
    registers: [this.registry],
  });
  private readonly active = new Gauge({
    name: 'pg_iam_proxy_connections_active',
    help: 'Client connections open, in any phase.',
    labelNames: ['instance'],
    registers: [this.registry],
  });
  private readonly failures = new Counter({
    name: 'pg_iam_proxy_auth_failures_total',
    help: `Sessions that failed before they were ready, by reason (${Object.values(Failure).join(', ')}).`,
    labelNames: ['instance', 'reason'],
    registers: [this.registry],
  });
  private readonly connectSeconds = new Histogram({
    name: 'pg_iam_proxy_connect_seconds',
    help: 'Seconds from accepting a client to its ReadyForQuery (TCP, TLS, token, login).',
    labelNames: ['instance'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly signed = new Counter({
    name: 'pg_iam_proxy_tokens_signed_total',
    help: 'IAM tokens signed (shared tokens count once).',
    labelNames: ['instance'],
    registers: [this.registry],
  });
  private readonly refreshes = new Counter({
    name: 'pg_iam_proxy_credential_refreshes_total',
    help: 'AWS credential fetches, by identity (#1, #2... as in /readyz; the "health and metrics listening" log line says which is which).',
    labelNames: ['identity'],
    registers: [this.registry],
  });

  constructor() {
    const metrics = this;
    new Counter({
      name: 'pg_iam_proxy_bytes_total',
      help: 'Bytes relayed, by direction: client_to_server (read from clients), server_to_client (written to clients).',
      labelNames: ['instance', 'direction'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const instance of metrics.instances) {
          const live = instance.liveBytes();
          const closed = metrics.closedBytes.get(instance.name) ?? { fromClient: 0, toClient: 0 };
          this.inc({ instance: instance.name, direction: 'client_to_server' }, live.fromClient + closed.fromClient);
          this.inc({ instance: instance.name, direction: 'server_to_client' }, live.toClient + closed.toClient);
        }
      },
    });
    collectDefaultMetrics({ register: this.registry });
  }

  /** The observer the engine calls for an instance. */
  observe = (instance: Instance): InstanceObserver => {
    const labels = { instance: instance.name };
    this.instances.add(instance);
    this.connections.inc(labels, 0);
    this.active.set(labels, 0);
    this.signed.inc(labels, 0);
    return {
      accepted: () => {
        this.connections.inc(labels);
        this.active.inc(labels);
      },
      ready: (seconds) => this.connectSeconds.observe(labels, seconds),
      signed: () => this.signed.inc(labels),
      failed: (reason) => this.failures.inc({ ...labels, reason }),
      closed: (fromClient, toClient) => {
        this.active.dec(labels);
        const total = this.closedBytes.get(instance.name) ?? { fromClient: 0, toClient: 0 };
        total.fromClient += fromClient;
        total.toClient += toClient;
        this.closedBytes.set(instance.name, total);
      },
    };
  };

  credentialsRefreshed = (ref: string): void => this.refreshes.inc({ identity: ref });
}
