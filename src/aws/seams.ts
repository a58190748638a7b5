// An RDS instance's seams: TLS verify-full against the RDS CAs and tokens from the identity's shared cache.
import type { CloudSeams } from '../cloud.js';
import type { InstanceConfig } from '../config.js';
import { pgTlsConnector } from '../upstream/connect.js';
import { trustByFile } from '../tls/upstream.js';
import { RdsAuthenticator } from './authenticator.js';
import { upstreamTls, type UpstreamTls } from './ca.js';
import { rdsConnectHints } from './hints.js';
import type { Identities } from './identity.js';
import type { TokenSource } from './tokens.js';

/**
 * An RDS instance's seams: TLS verify-full against the RDS CAs (one SecureContext per CA file's
 * contents: trustByFile) and tokens from `tokensFor` (one cache per identity).
 */
export function awsSeams(tokensFor: (instance: InstanceConfig) => TokenSource): CloudSeams {
  const tlsFor = trustByFile<UpstreamTls>((caFile, ca) => upstreamTls(caFile, caFile ? ca : undefined));
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
