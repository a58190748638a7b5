// `pg-iam-proxy serve` (the default command): the engine on its listeners, /healthz /readyz /metrics when
// asked for, credentials fetched at start, and a drain on the first SIGTERM/SIGINT.
import { cloudOf } from '../clouds/table.js';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { Identities } from '../aws/identity.js';
import { terminalMfa } from '../aws/mfa.js';
import type { InstanceConfig, ProxyConfig } from '../config.js';
import { formatHostPort, type HostPort } from '../host-port.js';
import type { Metrics } from '../ops/metrics.js';
import { CloudCredentials } from '../clouds/credentials.js';
import { Engine } from '../proxy/engine.js';
import { type ReloadedSettings, reloadOnHangup } from './reload.js';
import { announceAll, engineDeps } from './wiring.js';

/** Process exit codes a supervisor can act on. */
export const ExitCode = {
  Ok: 0, // a signal or /quitquitquit, and every session ended within the grace
  Failure: 1, // could not start (a port in use, an unreadable CA file)
  Usage: 2, // bad configuration
  NoCredentials: 3, // --require-credentials and none at start
  Interrupted: 130, // SIGINT and a drain cut short (by the grace or a second signal): 128 + 2
  Terminated: 143, // SIGTERM or /quitquitquit and a drain cut short: 128 + 15 (0 with --exit-zero-on-sigterm)
} as const;

export interface ServeOptions {
  /** Where /healthz, /readyz and /metrics listen; none without --http. */
  readonly http: HostPort | undefined;
  /** Exit (3) rather than serve when no credentials can be had at start. */
  readonly requireCredentials: boolean;
  readonly log: Logger;
  /** With --config: the settings read again, for SIGHUP (undefined: SIGHUP keeps its default). */
  readonly reload?: (() => ReloadedSettings) | undefined;
  /** After SIGTERM, new clients are still accepted this long before the drain (--min-sigterm-delay). */
  readonly minSigtermDelayMs?: number;
  /** A shutdown started by SIGTERM or /quitquitquit exits 0 even when its drain is cut short. */
  readonly exitZeroOnSigterm?: boolean;
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
  const shutdown = new Shutdown(proxy, log, {
    minSigtermDelayMs: options.minSigtermDelayMs ?? 0,
    exitZeroOnSigterm: options.exitZeroOnSigterm === true,
    onStop: () => {
      hangup?.off(); // a reload no longer: the proxy is going
      ops?.drain();
    },
  });
  const ops = metrics
    ? new (await import('../ops/http.js')).OpsServer({ proxy, identities, clouds, metrics, log, quit: () => shutdown.quit() })
    : undefined;
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
    const nouns = new Set(config.instances.map((instance) => cloudOf(instance.cloud).credentialsNoun));
    const noun = nouns.size === 1 ? [...nouns][0] : 'credentials or access token';
    log.fatal(`no ${noun} at start, and --require-credentials is set: exiting`);
    await proxy.close(0);
    return stop(ExitCode.NoCredentials);
  }
  hangup?.listening();
  return stop(await shutdown.armed());
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

/** What started a shutdown: a signal, or POST /quitquitquit on the HTTP listener. */
type Stop = NodeJS.Signals | 'quitquitquit';

/**
 * The shutdown, started by the first SIGINT/SIGTERM or by POST /quitquitquit. After SIGTERM new clients
 * are still accepted for --min-sigterm-delay (the app may be finishing requests); /quitquitquit, whose
 * caller says it is done, and SIGINT, a person at a terminal, drain at once. Then open sessions get
 * --shutdown-grace to end. Exit 0 when they all did (or none was open); when the grace or a second
 * signal cut the drain short, 128 + the signal, /quitquitquit counting as SIGTERM (0 for both with
 * --exit-zero-on-sigterm). A second signal exits at once.
 */
class Shutdown {
  private stop: Stop | undefined;
  /** /quitquitquit asked before the signals were handled (while credentials were fetched at start). */
  private asked = false;
  private listening = false;
  private delay: NodeJS.Timeout | undefined;
  private draining = false;
  private resolve!: (code: number) => void;
  private readonly done = new Promise<number>((resolve) => (this.resolve = resolve));

  constructor(
    private readonly proxy: Engine,
    private readonly log: Logger,
    private readonly options: { readonly minSigtermDelayMs: number; readonly exitZeroOnSigterm: boolean; readonly onStop: () => void },
  ) {}

  /** From now on SIGINT and SIGTERM shut down; resolves to the exit code. */
  armed(): Promise<number> {
    this.listening = true;
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
    if (this.asked) this.begin('quitquitquit');
    return this.done;
  }

  /** POST /quitquitquit: the same shutdown, with no delay; during the delay it drains at once. */
  quit(): void {
    if (!this.listening) this.asked = true;
    else if (this.stop) this.drain('quitquitquit');
    else this.begin('quitquitquit');
  }

  private readonly onSignal = (signal: NodeJS.Signals) => {
    if (!this.stop) {
      this.begin(signal);
      return;
    }
    this.log.warn({ signal }, 'second signal: exiting now');
    this.finish(this.cutShortCode(signal));
  };

  private begin(stop: Stop): void {
    this.stop = stop;
    this.options.onStop();
    const delayMs = stop === 'SIGTERM' ? this.options.minSigtermDelayMs : 0;
    if (delayMs === 0) {
      this.drain(stop);
      return;
    }
    this.log.info(
      { signal: stop, delaySeconds: delayMs / 1000 },
      `${stop}: still accepting new clients for ${delayMs / 1000} s (--min-sigterm-delay), then draining`,
    );
    this.delay = setTimeout(() => this.drain(stop), delayMs);
  }

  /** The drain, started by the end of the delay or by what `by` names. */
  private drain(by: Stop): void {
    clearTimeout(this.delay);
    if (this.draining) return;
    this.draining = true;
    this.log.info(
      {
        ...(by === 'quitquitquit' ? { request: 'POST /quitquitquit' } : { signal: by }),
        graceSeconds: this.proxy.config.shutdownGraceMs / 1000,
      },
      'shutting down: no new connections, waiting for sessions to end',
    );
    this.proxy.close().then((cutShort) => {
      this.log.info('stopped');
      this.finish(cutShort === 0 ? ExitCode.Ok : this.cutShortCode(this.stop!));
    });
  }

  /** A drain cut short: 128 + the signal; SIGTERM and /quitquitquit 0 with --exit-zero-on-sigterm. */
  private cutShortCode(signal: Stop): number {
    if (signal === 'SIGINT') return ExitCode.Interrupted;
    return this.options.exitZeroOnSigterm && this.stop !== 'SIGINT' ? ExitCode.Ok : ExitCode.Terminated;
  }

  private finish(code: number): void {
    clearTimeout(this.delay);
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    this.resolve(code);
  }
}
