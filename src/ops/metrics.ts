// Prometheus metrics (the names the README lists), fed by the engine's observers: nothing on the per-byte path.
// Bytes are summed at scrape time from the open sessions plus the totals of the closed ones.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { Failure } from '../protocol/errors.js';
import type { InstanceObserver, Instance } from '../proxy/engine.js';
import type { PoolSnapshot } from '../pool/pool.js';

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

  private readonly poolWait = new Histogram({
    name: 'pg_iam_proxy_pool_wait_seconds',
    help: 'Seconds a client waited for a pooled server (only clients that had to wait).',
    labelNames: ['instance', 'user', 'database'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30],
    registers: [this.registry],
  });
  private readonly serverLogins = new Counter({
    name: 'pg_iam_proxy_server_logins_total',
    help: 'Servers a pool logged in (each one IAM login); a pooled connect that reuses a server adds none.',
    labelNames: ['instance', 'user', 'database'],
    registers: [this.registry],
  });

  private readonly serverLoginFailures = new Counter({
    name: 'pg_iam_proxy_server_login_failures_total',
    help: 'Logins a pool tried for a new server that failed; its clients waited for its other servers (backing off) or, with none, heard the refusal.',
    labelNames: ['instance', 'user', 'database'],
    registers: [this.registry],
  });

  private readonly reloads = new Counter({
    name: 'pg_iam_proxy_config_reloads_total',
    help: 'Reloads of --config on SIGHUP: ok (applied) or error (the file did not parse or validate; nothing changed).',
    labelNames: ['result'],
    registers: [this.registry],
  });

  /** A SIGHUP reload was applied (ok) or refused (error). */
  reloaded = (result: 'ok' | 'error'): void => this.reloads.inc({ result });

  constructor() {
    const metrics = this;
    for (const result of ['ok', 'error']) this.reloads.inc({ result }, 0);
    // Pools are read at scrape time, like the bytes: nothing is counted on the per-client path. Pools of one
    // user and database (clients with other startup parameters) add up under the same labels.
    const poolGauge = (name: string, help: string, read: (pool: PoolSnapshot) => Record<string, number>) =>
      new Gauge({
        name,
        help,
        labelNames: ['instance', 'user', 'database', 'state'],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const instance of metrics.instances) {
            for (const pool of instance.pools?.snapshot() ?? []) {
              for (const [state, n] of Object.entries(read(pool)))
                this.inc({ instance: instance.name, user: pool.user, database: pool.database, state }, n);
            }
          }
        },
      });
    poolGauge(
      'pg_iam_proxy_pool_servers',
      'Pooled servers by state: idle (ready for a client), active (held by a client, being reset or logging in).',
      (p) => ({
        idle: p.servers.idle,
        active: p.servers.active + p.servers.opening,
      }),
    );
    poolGauge('pg_iam_proxy_pool_clients', 'Clients of a pool by state: active (holding a server), waiting (for one).', (p) => ({
      active: p.clients.active,
      waiting: p.clients.waiting,
    }));
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
      pool: {
        login: (key) => this.serverLogins.inc({ ...labels, user: key.user, database: key.database }),
        waited: (key, seconds) => this.poolWait.observe({ ...labels, user: key.user, database: key.database }, seconds),
        loginFailed: (key) => this.serverLoginFailures.inc({ ...labels, user: key.user, database: key.database }),
      },
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
