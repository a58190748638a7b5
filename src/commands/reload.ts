// SIGHUP with --config: the file read again, flags and PG_IAM_PROXY_* over it as at start, applied to the
// running engine (Engine.reload). A file that does not parse or validate changes nothing: the error is
// logged with its file, line and key, as at start. Reloads run one at a time, in order.
import type { Logger } from 'pino';
import type { Identities } from '../aws/identity.js';
import { announceAll } from './wiring.js';
import type { ProxyConfig } from '../config.js';
import type { CloudCredentials } from '../clouds/credentials.js';
import type { Engine } from '../proxy/engine.js';

/** What a reload reads: the settings serve started with, from the file as it is now. */
export interface ReloadedSettings {
  readonly config: ProxyConfig;
  readonly warnings: readonly string[];
  readonly log: { readonly level: string };
}

export interface ReloadOptions {
  readonly log: Logger;
  readonly identities: Identities;
  /** Azure's and Cloud SQL's tokens. */
  readonly clouds?: CloudCredentials | undefined;
  /** pg_iam_proxy_config_reloads_total, with --http. */
  readonly reloaded?: ((result: 'ok' | 'error') => void) | undefined;
}

/**
 * Reload on every SIGHUP until `off()`. Installed before the listeners are up, so a SIGHUP meanwhile does
 * not end the process (its default): reloads wait for `listening()`. `off()` at the start of a shutdown.
 */
export function reloadOnHangup(
  proxy: Engine,
  reread: () => ReloadedSettings,
  options: ReloadOptions,
): { off: () => void; listening: () => void; idle: () => Promise<void> } {
  const { log } = options;
  let listening!: () => void;
  let chain = new Promise<void>((resolve) => (listening = resolve));
  const reload = async () => {
    let settings: ReloadedSettings;
    try {
      settings = reread();
    } catch (err) {
      options.reloaded?.('error');
      log.error({ reason: (err as Error).message }, `configuration not reloaded, nothing changed: ${(err as Error).message}`);
      return;
    }
    try {
      // Identities and clouds whose credentials are held already, before the new instances make holders.
      const held = new Set<unknown>([...options.identities.all(), ...(options.clouds?.all().map(([cloud]) => cloud) ?? [])]);
      const outcome = await proxy.reload(settings.config);
      log.level = settings.log.level;
      for (const warning of settings.warnings) log.warn(warning);
      options.reloaded?.('ok');
      log.info(outcome, 'configuration reloaded');
      // Identities new to this process are fetched now, as at start; those already held are not asked again.
      await announceAll({ instances: proxy.instances.map((instance) => instance.config) }, options.identities, log, options.clouds, held);
    } catch (err) {
      options.reloaded?.('error');
      // Engine.reload changes nothing until every new part is ready (files read, new listeners up).
      log.error({ err }, `configuration not reloaded, nothing changed: ${(err as Error).message}`);
    }
  };
  const onHangup = () => {
    log.info('SIGHUP: reloading the configuration');
    chain = chain.then(reload);
  };
  process.on('SIGHUP', onHangup);
  return { off: () => process.off('SIGHUP', onHangup), listening, idle: () => chain };
}
