// Wiring shared by the commands that run the engine (serve, run): each instance's seams, from its cloud.
// The engine (src/proxy/) knows only the Connector and the Authenticator; here they are made from AWS's
// pieces: the RDS CA bundle and its advice, the identity's shared token cache and its words.
import type { Logger } from 'pino';
import { RdsAuthenticator } from '../aws/authenticator.js';
import { upstreamTls, type UpstreamTls } from '../aws/ca.js';
import { rdsConnectHints } from '../aws/hints.js';
import { announce, type Identities } from '../aws/identity.js';
import type { TokenSource } from '../aws/tokens.js';
import type { InstanceConfig, ProxyConfig } from '../config.js';
import type { EngineDeps, Instance, InstanceObserver } from '../proxy/engine.js';
import { pgTlsConnector } from '../proxy/upstream-connect.js';

/** What the engine needs, for the instances of this process: one place decides how each is served. */
export function engineDeps(options: {
  identities: Identities;
  log: Logger;
  observe?: ((instance: Instance) => InstanceObserver) | undefined;
}): EngineDeps {
  const { identities } = options;
  return {
    ...awsSeams((instance) => tokensOf(identities, instance)),
    log: options.log,
    observe: options.observe,
  };
}

/**
 * An RDS instance's seams: TLS verify-full against the RDS CAs (one SecureContext per CA file: a bundle
 * is parsed once, not per connection) and tokens from `tokensFor` (one cache per identity).
 */
export function awsSeams(tokensFor: (instance: InstanceConfig) => TokenSource): Pick<EngineDeps, 'authenticatorFor' | 'connectorFor'> {
  const contexts = new Map<string, UpstreamTls>();
  const tlsFor = (caFile: string | undefined) => {
    const key = caFile ?? '';
    let tls = contexts.get(key);
    if (!tls) contexts.set(key, (tls = upstreamTls(caFile)));
    return tls;
  };
  return {
    authenticatorFor: (instance) => new RdsAuthenticator(tokensFor(instance), instance.endpoint, instance.region),
    connectorFor: (instance, connectTimeoutMs) => {
      const tls = tlsFor(instance.caFile);
      return pgTlsConnector({
        endpoint: instance.endpoint,
        connectTo: instance.connectTo,
        tls: tls.context,
        hints: rdsConnectHints(tls.source),
        connectTimeoutMs,
      });
    },
  };
}

/**
 * An instance's tokens: signed with the identity of the DB user when `users:` names one, else with the
 * instance's. Identities are shared (one credentials holder and token cache each) as always.
 */
export function tokensOf(identities: Identities, instance: InstanceConfig): TokenSource {
  const base = identities.for(instance.identity, instance.region).tokens;
  if (!instance.users) return base;
  const byUser = new Map([...instance.users].map(([user, spec]) => [user, identities.for(spec, instance.region).tokens]));
  return {
    label: base.label,
    get: (scope, notThis) => (byUser.get(scope.user) ?? base).get(scope, notThis),
  };
}

/** Log who signs for each identity in use (users: included), once each; resolves to whether each has credentials. */
export async function announceAll(config: ProxyConfig, identities: Identities, log: Logger): Promise<boolean[]> {
  const seen = new Set<unknown>();
  const jobs: Promise<boolean>[] = [];
  for (const instance of config.instances) {
    for (const spec of [instance.identity, ...(instance.users?.values() ?? [])]) {
      const identity = identities.for(spec, instance.region);
      if (seen.has(identity)) continue;
      seen.add(identity);
      jobs.push(announce(identity, instance.region, log));
    }
  }
  return Promise.all(jobs);
}
