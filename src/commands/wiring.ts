// Wiring shared by the commands that run the engine (serve, run): the engine's seams, from the clouds.
import type { Logger } from 'pino';
import { announce, type Identities } from '../aws/identity.js';
import type { TokenSource } from '../aws/tokens.js';
import type { InstanceConfig, ProxyConfig } from '../config.js';
import type { EngineDeps, Instance, InstanceObserver } from '../proxy/engine.js';

/** What the engine needs, for the instances of this process: one place decides how each is served. */
export function engineDeps(options: { identities: Identities; log: Logger; observe?: ((instance: Instance) => InstanceObserver) | undefined }): EngineDeps {
  return { tokensFor: signerFor(options.identities), log: options.log, observe: options.observe };
}

/** Each instance signs as its identity; instances with the same identity share one holder and cache. */
export function signerFor(identities: Identities): (instance: InstanceConfig) => TokenSource {
  return (instance) => identities.for(instance.identity, instance.region).tokens;
}

/** Log who signs for each identity in use, once each; resolves to whether each has credentials. */
export async function announceAll(config: ProxyConfig, identities: Identities, log: Logger): Promise<boolean[]> {
  const seen = new Set<unknown>();
  const jobs: Promise<boolean>[] = [];
  for (const instance of config.instances) {
    const identity = identities.for(instance.identity, instance.region);
    if (seen.has(identity)) continue;
    seen.add(identity);
    jobs.push(announce(identity, instance.region, log));
  }
  return Promise.all(jobs);
}
