// SIGHUP with --config: the file read again, flags and PG_IAM_PROXY_* over it as at start, applied to the
// running engine (Engine.reload). A file that does not parse or validate changes nothing: the error is
// logged with its file, line and key, as at start. Reloads run one at a time, in order.
import type { Logger } from 'pino';
import type { Identities } from '../aws/identity.js';
import type { ProxyConfig } from '../config.js';
import type { Engine } from '../proxy/engine.js';
import { announceAll } from './wiring.js';

/** What a reload reads: the settings serve started with, from the file as it is now. */
export interface Reread {
  readonly config: ProxyConfig;
  readonly warnings: readonly string[];
  readonly log: { readonly level: string };
}

export interface ReloadOptions {
  readonly log: Logger;
  readonly identities: Identities;
  /** pg_iam_proxy_config_reloads_total, with --http. */
  readonly reloaded?: ((result: 'ok' | 'error') => void) | undefined;
}

/** Reload on every SIGHUP until the returned function is called; `done` resolves after each reload (tests). */
export function reloadOnHangup(
  proxy: Engine,
  reread: () => Reread,
  options: ReloadOptions,
): { off: () => void; idle: () => Promise<void> } {
  const { log } = options;
  let chain = Promise.resolve();
  const reload = async () => {
    let settings: Reread;
    try {
      settings = reread();
    } catch (err) {
      options.reloaded?.('error');
      log.error({ reason: (err as Error).message }, `configuration not reloaded, nothing changed: ${(err as Error).message}`);
      return;
    }
    try {
      const outcome = await proxy.reload(settings.config);
      log.level = settings.log.level;
      for (const warning of settings.warnings) log.warn(warning);
      options.reloaded?.('ok');
      log.info(outcome, 'configuration reloaded');
      // Identities new to this process are fetched now, as at start (those already held are not asked again).
      const fresh = proxy.instances.filter((instance) => [...outcome.added, ...outcome.changed].includes(instance.name));
      if (fresh.length > 0) await announceAll({ ...settings.config, instances: fresh.map((i) => i.config) }, options.identities, log);
    } catch (err) {
      options.reloaded?.('error');
      log.error({ err }, `configuration reloaded in part: ${(err as Error).message}`);
    }
  };
  const onHangup = () => {
    log.info('SIGHUP: reloading the configuration');
    chain = chain.then(reload);
  };
  process.on('SIGHUP', onHangup);
  return { off: () => process.off('SIGHUP', onHangup), idle: () => chain };
}
