// Wiring shared by the commands that run the engine (serve, run): each instance's seams, from its cloud.
// The engine (src/proxy/) knows only the Connector and the Authenticator; here they are made from the
// cloud's pieces. AWS: the RDS CA bundle and its advice, the identity's shared token cache and its words.
// Azure: Node's public roots (or --ca-file), Entra ID tokens from DefaultAzureCredential. Cloud SQL: the
// instance's server CA and address from the SQL Admin API, tokens from Application Default Credentials.
import type { SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { RdsAuthenticator } from '../aws/authenticator.js';
import { readCaFile, upstreamContext, upstreamTls, type UpstreamTls } from '../aws/ca.js';
import { azureConnectHints, entraWords } from '../azure/entra.js';
import type { Authenticator, Connector } from '../cloud.js';
import { CloudSqlConnector } from '../gcp/connector.js';
import { cloudSqlWords } from '../gcp/iam.js';
import { BearerAuthenticator } from '../oauth/authenticator.js';
import type { CloudCredentials } from '../oauth/sources.js';
import { rdsConnectHints } from '../aws/hints.js';
import { announce, type Identities } from '../aws/identity.js';
import type { TokenSource } from '../aws/tokens.js';
import type { InstanceConfig, ProxyConfig } from '../config.js';
import type { EngineDeps, Instance, InstanceObserver } from '../proxy/engine.js';
import { pgTlsConnector } from '../upstream/connect.js';

/** What the engine needs, for the instances of this process: one place decides how each is served. */
export function engineDeps(options: {
  identities: Identities;
  /** Azure's and Cloud SQL's tokens; needed only when an instance is theirs. */
  clouds?: CloudCredentials | undefined;
  log: Logger;
  observe?: ((instance: Instance) => InstanceObserver) | undefined;
}): EngineDeps {
  const { identities, clouds } = options;
  const aws = awsSeams((instance) => tokensOf(identities, instance));
  const others = clouds ? oauthSeams(clouds) : undefined;
  const seams = (instance: InstanceConfig) => {
    if (instance.cloud === 'aws') return aws;
    /* c8 ignore next -- the commands always pass clouds; a missing one is a wiring bug */
    if (!others) throw new Error(`no credentials for ${instance.cloud} instances were wired`);
    return others;
  };
  return {
    authenticatorFor: (instance) => seams(instance).authenticatorFor(instance),
    connectorFor: (instance, connectTimeoutMs) => seams(instance).connectorFor(instance, connectTimeoutMs),
    log: options.log,
    observe: options.observe,
  };
}

/**
 * An Azure or Cloud SQL instance's seams: the cloud's one token holder (the token names the identity,
 * whatever the DB user) and TLS verify-full against the server name (Azure) or the instance's identity
 * (Cloud SQL).
 */
export function oauthSeams(clouds: CloudCredentials): Pick<EngineDeps, 'authenticatorFor' | 'connectorFor'> {
  // No `ca`: Node's public roots (with NODE_EXTRA_CA_CERTS), DigiCert Global Root G2 and Microsoft RSA Root CA 2017 among them.
  const azureTls = trustByFile<SecureContext>((caFile, ca) => upstreamContext(caFile ? ca : undefined));
  return {
    authenticatorFor: (instance): Authenticator =>
      instance.cloud === 'azure'
        ? new BearerAuthenticator(clouds.tokens('azure'), entraWords)
        : new BearerAuthenticator(clouds.tokens('gcp'), cloudSqlWords(instance.cloudSql?.instance)),
    connectorFor: (instance, connectTimeoutMs): Connector =>
      instance.cloud === 'azure'
        ? pgTlsConnector({
            endpoint: instance.endpoint,
            connectTo: instance.connectTo,
            tls: azureTls(instance.caFile),
            hints: azureConnectHints(instance.caFile),
            connectTimeoutMs,
          })
        : new CloudSqlConnector(instance, connectTimeoutMs, clouds.connectSettings()),
  };
}

/**
 * The trust made from each CA file (none: `undefined`), made again only when the file's certificates
 * changed: a SecureContext parses its CAs once, not per connection. The file is read each time an
 * instance's connector is made (at start and on every reload), so a bundle replaced at the same path is
 * what new connections verify against, and one that cannot be read refuses the reload.
 */
function trustByFile<T>(make: (caFile: string | undefined, ca: readonly string[]) => T): (caFile: string | undefined) => T {
  const made = new Map<string, { text: string; trust: T }>();
  return (caFile) => {
    const ca = caFile ? readCaFile(caFile) : [];
    const text = ca.join('\n');
    const key = caFile ?? '';
    let entry = made.get(key);
    if (entry?.text !== text) made.set(key, (entry = { text, trust: make(caFile, ca) }));
    return entry.trust;
  };
}

/**
 * An RDS instance's seams: TLS verify-full against the RDS CAs (one SecureContext per CA file's
 * contents: trustByFile) and tokens from `tokensFor` (one cache per identity).
 */
export function awsSeams(tokensFor: (instance: InstanceConfig) => TokenSource): Pick<EngineDeps, 'authenticatorFor' | 'connectorFor'> {
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

/**
 * Log who signs for each identity in use (users: included), once each; resolves to whether each has
 * credentials. Azure and Cloud SQL instances: their cloud's token, fetched once.
 */
export async function announceAll(
  config: Pick<ProxyConfig, 'instances'>,
  identities: Identities,
  log: Logger,
  clouds?: CloudCredentials,
  /** Identities and clouds announced already (a reload): not asked again. */
  seen: Set<unknown> = new Set(),
): Promise<boolean[]> {
  const jobs: Promise<boolean>[] = [];
  for (const instance of config.instances) {
    if (instance.cloud !== 'aws') {
      if (clouds && !seen.has(instance.cloud)) jobs.push(clouds.announce(instance.cloud, log));
      seen.add(instance.cloud);
      continue;
    }
    for (const spec of [instance.identity, ...(instance.users?.values() ?? [])]) {
      const identity = identities.for(spec, instance.region);
      if (seen.has(identity)) continue;
      seen.add(identity);
      jobs.push(announce(identity, instance.region, log));
    }
  }
  return Promise.all(jobs);
}
