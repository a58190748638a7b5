// The engine in-process for an Azure or Cloud SQL instance, wired as serve wires it (commands/wiring.ts),
// its logs captured in memory (to assert on them, and that no token reaches them).
import { Writable } from 'node:stream';
import { Identities } from '../../src/aws/identity.js';
import { engineDeps } from '../../src/commands/wiring.js';
import { resolveInstance, type InstanceInput, type ProxyConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { CloudCredentials, type CloudCredentialsOptions } from '../../src/oauth/sources.js';
import { Engine } from '../../src/proxy/engine.js';

export interface CloudProxy {
  readonly proxy: Engine;
  readonly port: number;
  readonly clouds: CloudCredentials;
  rawLogs(): string;
  logs(): Array<Record<string, unknown>>;
  /** The first log line, written so far or later, that matches. */
  line(match: (entry: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

export async function startCloudProxy(
  input: Partial<InstanceInput> & { endpoint: string },
  options: { clouds?: CloudCredentialsOptions; connectTimeoutMs?: number } = {},
): Promise<CloudProxy> {
  const { instance } = resolveInstance({ listen: '127.0.0.1:0', ...input });
  const config: ProxyConfig = {
    instances: [instance],
    startupTimeoutMs: 5_000,
    connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
    maxConnections: undefined,
    shutdownGraceMs: 1_000,
  };
  let lines = '';
  const waiters = new Set<{ match: (entry: Record<string, unknown>) => boolean; resolve: (entry: Record<string, unknown>) => void }>();
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines += String(chunk);
      for (const text of String(chunk).split('\n').filter(Boolean)) {
        const entry = JSON.parse(text) as Record<string, unknown>;
        for (const waiter of waiters) {
          if (!waiter.match(entry)) continue;
          waiters.delete(waiter);
          waiter.resolve(entry);
        }
      }
      done();
    },
  });
  const logs = () =>
    lines
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const log = createLogger({ level: 'debug', format: 'json' }, sink);
  const clouds = new CloudCredentials({ log, ...options.clouds });
  const identities = new Identities();
  const proxy = new Engine(config, engineDeps({ identities, clouds, log }));
  const [address] = await proxy.listen();
  return {
    proxy,
    port: address!.port,
    clouds,
    rawLogs: () => lines,
    logs,
    line: (match) =>
      new Promise((resolve) => {
        const seen = logs().find(match);
        if (seen) resolve(seen);
        else waiters.add({ match, resolve });
      }),
    close: async () => {
      await proxy.close(1_000);
      clouds.close();
      identities.close();
    },
  };
}
