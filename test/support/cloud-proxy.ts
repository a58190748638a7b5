// The engine in-process for an Azure or Cloud SQL instance, wired as serve wires it (commands/wiring.ts),
// its logs captured in memory (to assert on them, and that no token reaches them).
import { Identities } from '../../src/aws/identity.js';
import { engineDeps } from '../../src/commands/wiring.js';
import { resolveInstance, type InstanceInput, type ProxyConfig } from '../../src/config.js';
import { memoryLog } from './memory-log.js';
import { CloudCredentials, type CloudCredentialsOptions } from '../../src/clouds/credentials.js';
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
  const memory = memoryLog();
  const log = memory.log;
  const clouds = new CloudCredentials({ log, ...options.clouds });
  const identities = new Identities();
  const proxy = new Engine(config, engineDeps({ identities, clouds, log }));
  const [address] = await proxy.listen();
  return {
    proxy,
    port: address!.port,
    clouds,
    rawLogs: memory.raw,
    logs: memory.lines,
    line: memory.line,
    close: async () => {
      await proxy.close(1_000);
      clouds.close();
      identities.close();
    },
  };
}
