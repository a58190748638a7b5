// Wiring shared by the commands that run the engine (serve, run): each instance's seams, from its cloud.
// The engine (src/proxy/) knows only the Connector and the Authenticator; each cloud makes them from its
// own pieces (its Cloud in src/clouds/table.ts), once per process so that its instances share its trust
// and its tokens.
import type { Logger } from 'pino';
import type { Identities } from '../aws/identity.js';
import type { CloudSeams } from '../cloud.js';
import type { CloudCredentials } from '../clouds/credentials.js';
import type { CloudName } from '../clouds/names.js';
import { type CloudProcess, cloudOf } from '../clouds/table.js';
import type { ProxyConfig } from '../config.js';
import type { EngineDeps, Instance, InstanceObserver } from '../proxy/engine.js';

/** What the engine needs, for the instances of this process: one place decides how each is served. */
export function engineDeps(options: {
  identities: Identities;
  /** The token clouds' holders; needed only when an instance is theirs. */
  clouds?: CloudCredentials | undefined;
  log: Logger;
  observe?: ((instance: Instance) => InstanceObserver) | undefined;
}): EngineDeps {
  const held: CloudProcess = { identities: options.identities, clouds: options.clouds };
  const made = new Map<CloudName, CloudSeams>();
  const seams = (cloud: CloudName) => {
    let these = made.get(cloud);
    if (!these) made.set(cloud, (these = cloudOf(cloud).seams(held)));
    return these;
  };
  return {
    authenticatorFor: (instance) => seams(instance.cloud).authenticatorFor(instance),
    connectorFor: (instance, connectTimeoutMs) => seams(instance.cloud).connectorFor(instance, connectTimeoutMs),
    log: options.log,
    observe: options.observe,
  };
}

/**
 * Log who signs for each identity in use (users: included) and fetch each token cloud's token, once
 * each; resolves to whether each has credentials.
 */
export async function announceAll(
  config: Pick<ProxyConfig, 'instances'>,
  identities: Identities,
  log: Logger,
  clouds?: CloudCredentials,
  /** Identities and clouds announced already (a reload): not asked again. */
  seen: Set<unknown> = new Set(),
): Promise<boolean[]> {
  const held: CloudProcess = { identities, clouds };
  return Promise.all(config.instances.flatMap((instance) => cloudOf(instance.cloud).announce(held, instance, log, seen)));
}
