// The engine: one listener per configured instance, sessions counted per instance, a shutdown that
// stops accepting and waits for open sessions up to a deadline.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import type { Logger } from 'pino';
import { formatHostPort } from '../aws/endpoint.js';
import { upstreamTls, type UpstreamTls } from '../aws/ca.js';
import type { TokenSource } from '../aws/tokens.js';
import type { InstanceConfig, ProxyConfig } from '../config.js';
import { SqlState } from '../protocol/constants.js';
import { WireError } from '../protocol/errors.js';
import { CancelRegistry } from './cancel.js';
import { Session, type SessionContext } from './session.js';

/** A login rejected with 28000 is tried again with a fresh token after these delays (ms). */
export const LOGIN_RETRY_DELAYS_MS = [0, 250] as const;

export interface EngineDeps {
  /** The token source for an instance: one per identity, shared by the instances that sign as it. */
  readonly tokensFor: (instance: InstanceConfig) => TokenSource;
  readonly log: Logger;
}

let nextSessionId = 1;

export class ProxyInstance {
  private readonly server: Server;
  private readonly sessions = new Map<Socket, Session>();
  private readonly ctx: SessionContext;
  readonly name: string;

  constructor(
    readonly config: InstanceConfig,
    proxy: ProxyConfig,
    tls: UpstreamTls,
    deps: EngineDeps,
  ) {
    this.name = formatHostPort(config.endpoint);
    this.ctx = {
      target: { endpoint: config.endpoint, connectTo: config.connectTo, tls, connectTimeoutMs: proxy.connectTimeoutMs },
      region: config.region,
      dbUser: config.dbUser,
      tokens: deps.tokensFor(config),
      cancels: new CancelRegistry(),
      startupTimeoutMs: proxy.startupTimeoutMs,
      retryDelaysMs: LOGIN_RETRY_DELAYS_MS,
      log: deps.log.child({ instance: this.name }),
    };
    const max = proxy.maxConnections ?? Infinity;
    // allowHalfOpen: a client that shuts down its sending side still gets the server's last replies.
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
      const refusal =
        this.sessions.size >= max
          ? new WireError(SqlState.TooManyConnections, `sorry, too many clients already (pg-iam-proxy --max-connections ${max})`, { reason: 'max_connections' })
          : undefined;
      const session = new Session(client, this.ctx, nextSessionId++, refusal);
      this.sessions.set(client, session);
      client.once('close', () => this.sessions.delete(client));
      void session.run();
    });
  }

  /** Number of client connections open, in any phase. */
  get connections(): number {
    return this.sessions.size;
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = this.config.listen;
    this.server.listen({ host, port });
    await once(this.server, 'listening');
    const address = this.server.address() as AddressInfo;
    this.ctx.log.info({ listen: formatHostPort({ host: address.address, port: address.port }), connectTo: formatHostPort(this.config.connectTo), region: this.config.region }, 'listening');
    return address;
  }

  /** Stop accepting; wait up to `graceMs` for open sessions to end, then close the rest. */
  async close(graceMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.sessions.size > 0) {
      const drained = new Promise<void>((resolve) => {
        const check = () => this.sessions.size === 0 && resolve();
        for (const client of this.sessions.keys()) client.once('close', check);
      });
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)));
      if (await Promise.race([drained.then(() => false), timedOut])) {
        this.ctx.log.warn({ open: this.sessions.size }, `${this.sessions.size} connection(s) still open after waiting ${graceMs / 1000} s: closing them`);
        for (const client of this.sessions.keys()) client.destroy();
      }
      clearTimeout(timer);
    }
    await closed;
  }
}

/** All instances of one process. */
export class Proxy {
  readonly instances: readonly ProxyInstance[];

  constructor(
    readonly config: ProxyConfig,
    deps: EngineDeps,
  ) {
    // One SecureContext per CA file: the bundle is parsed once, not per connection.
    const contexts = new Map<string, UpstreamTls>();
    const tlsFor = (caFile: string | undefined) => {
      const key = caFile ?? '';
      let tls = contexts.get(key);
      if (!tls) contexts.set(key, (tls = upstreamTls(caFile)));
      return tls;
    };
    this.instances = config.instances.map((instance) => new ProxyInstance(instance, config, tlsFor(instance.caFile), deps));
  }

  async listen(): Promise<AddressInfo[]> {
    const addresses: AddressInfo[] = [];
    try {
      for (const instance of this.instances) addresses.push(await instance.listen());
    } catch (err) {
      await this.close(0);
      throw err;
    }
    return addresses;
  }

  async close(graceMs = this.config.shutdownGraceMs): Promise<void> {
    await Promise.all(this.instances.map((instance) => instance.close(graceMs)));
  }
}
