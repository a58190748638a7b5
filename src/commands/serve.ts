// `pg-iam-proxy serve` (the default command): the engine on its listeners, /healthz /readyz /metrics when
// asked for, credentials fetched at start, and a drain on the first SIGTERM/SIGINT.
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { Identities } from '../aws/identity.js';
import { terminalMfa } from '../aws/mfa.js';
import type { InstanceConfig, ProxyConfig } from '../config.js';
import { formatHostPort, type HostPort } from '../host-port.js';
import type { Metrics } from '../ops/metrics.js';
import { CloudCredentials } from '../oauth/sources.js';
import { Engine } from '../proxy/engine.js';
import { type Reread, reloadOnHangup } from './reload.js';
import { announceAll, engineDeps } from './wiring.js';

/** Process exit codes a supervisor can act on. */
export const ExitCode = {
  Ok: 0,
  Failure: 1, // could not start (a port in use, an unreadable CA file)
  Usage: 2, // bad configuration
  NoCredentials: 3, // --require-credentials and none at start
  Interrupted: 130, // second SIGINT: 128 + 2
  Terminated: 143, // second SIGTERM: 128 + 15
} as const;

export interface ServeOptions {
  /** Where /healthz, /readyz and /metrics listen; none without --http. */
  readonly http: HostPort | undefined;
  /** Exit (3) rather than serve when no credentials can be had at start. */
  readonly requireCredentials: boolean;
  readonly log: Logger;
  /** With --config: the settings read again, for SIGHUP (undefined: SIGHUP keeps its default). */
  readonly reload?: (() => Reread) | undefined;
}

/** Run the proxy until a signal; resolves to the exit code. */
export async function serve(config: ProxyConfig, options: ServeOptions): Promise<number> {
  const { log } = options;
  // Metrics and the HTTP endpoint load only when asked for (--http): start-up stays short without them.
  const metrics: Metrics | undefined = options.http ? new (await import('../ops/metrics.js')).Metrics() : undefined;
  const identities = new Identities({ log, mfa: terminalMfa(), onRefresh: metrics?.credentialsRefreshed });
  const clouds = new CloudCredentials({ log, onRefresh: metrics && ((cloud) => metrics.credentialsRefreshed(cloud)) });
  const proxy = new Engine(config, engineDeps({ identities, clouds, log, observe: metrics?.observe }));
  // From here a SIGHUP reloads (once listening), rather than end the process as by default.
  const hangup = options.reload && reloadOnHangup(proxy, options.reload, { log, identities, clouds, reloaded: metrics?.reloaded });
  const ops = metrics ? new (await import('../ops/http.js')).OpsServer({ proxy, identities, clouds, metrics, log }) : undefined;
  const stop = async (code: number) => {
    hangup?.off();
    identities.close();
    clouds.close();
    await ops?.close();
    return code;
  };
  try {
    const addresses = await proxy.listen();
    if (ops && options.http) await ops.listen(options.http);
    for (const [i, instance] of config.instances.entries()) {
      log.info({ instance: formatHostPort(instance.endpoint) }, `ready: psql "${connectionString(instance, addresses[i])}"`);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    log.fatal({ err }, e.code === 'EADDRINUSE' ? `cannot listen: address in use (${e.message})` : `cannot start: ${e.message}`);
    await proxy.close(0);
    return stop(ExitCode.Failure);
  }
  // Fetch credentials now, so the first client does not wait. Without them the proxy serves (clients are
  // told why, /readyz says not ready) unless --require-credentials asks for an exit a supervisor sees.
  const announced = announceAll(config, identities, log, clouds);
  if (options.requireCredentials && (await announced).includes(false)) {
    const aws = config.instances.every((instance) => instance.cloud === 'aws');
    log.fatal(`no ${aws ? 'AWS credentials' : 'credentials or access token'} at start, and --require-credentials is set: exiting`);
    await proxy.close(0);
    return stop(ExitCode.NoCredentials);
  }
  hangup?.listening();
  return stop(
    await untilSignal(proxy, log, () => {
      hangup?.off(); // a reload no longer: the proxy is going
      ops?.drain();
    }),
  );
}

/**
 * What a person types to reach an instance: its listener (a wildcard address as the loopback, where the
 * client runs), and the user and database when the proxy decides them.
 */
function connectionString(instance: InstanceConfig, address: AddressInfo | undefined): string {
  const wildcard: Record<string, string> = { '0.0.0.0': '127.0.0.1', '::': '::1' };
  // serve has a TCP listener, or the unix socket alone (--listen none), whose port is then its own.
  const [host, port] = address
    ? [wildcard[address.address] ?? address.address, address.port]
    : [instance.unixSocket!.dir, instance.unixSocket!.port];
  const user = instance.dbUser ? conninfoValue(instance.dbUser) : '<db user>';
  const dbname = instance.allowDatabases?.length === 1 ? conninfoValue(instance.allowDatabases[0]!) : '<db>';
  return `host=${conninfoValue(host)} port=${port} user=${user} dbname=${dbname}`;
}

/** A libpq keyword value: quoted when it holds a space, a quote or a backslash. */
const conninfoValue = (value: string) => (/^[^\s'\\]+$/.test(value) ? value : `'${value.replace(/['\\]/g, '\\$&')}'`);

/** First SIGINT/SIGTERM: drain and exit 0. A second: exit at once with 128 + signal. */
function untilSignal(proxy: Engine, log: Logger, onDrain: () => void): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        resolve(signal === 'SIGINT' ? ExitCode.Interrupted : ExitCode.Terminated);
        return;
      }
      stopping = true;
      onDrain();
      log.info(
        { signal, graceSeconds: proxy.config.shutdownGraceMs / 1000 },
        'shutting down: no new connections, waiting for sessions to end',
      );
      proxy.close().then(() => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        log.info('stopped');
        resolve(ExitCode.Ok);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
