// Start the engine in-process in front of a TestDb, with the real signer, a counting token source and
// logs captured in memory (to assert on them, and that no token ever reaches them).
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { CredentialsHolder } from '../../src/aws/credentials.js';
import { SharedTokens, type IamToken, type TokenScope, type TokenSource } from '../../src/aws/tokens.js';
import { resolveInstance, type InstanceInput, type ProxyConfig } from '../../src/config.js';
import { memoryLog } from './memory-log.js';
import { Engine } from '../../src/proxy/engine.js';
import type { PoolSettings } from '../../src/pool/pool.js';
import { awsSeams } from '../../src/aws/seams.js';
import type { AwsKey, TestDb } from './testdb.js';

export interface TestProxy {
  readonly proxy: Engine;
  readonly port: number;
  /** Every token handed out, to prove none leaks anywhere. */
  readonly issued: IamToken[];
  readonly signed: () => number;
  readonly credentialFetches: () => number;
  /** Log lines so far, parsed. */
  logs(): Array<Record<string, unknown>>;
  /** The first log line, written so far or later, that matches. */
  line(match: (entry: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  rawLogs(): string;
  close(graceMs?: number): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface TestProxyOptions extends Partial<Omit<InstanceInput, 'caFile'>> {
  /** The test CA by default; null for the bundled RDS CAs. */
  caFile?: string | null;
  maxConnections?: number;
  startupTimeoutMs?: number;
  connectTimeoutMs?: number;
  key?: AwsKey;
  tokens?: TokenSource;
  /** Pooling settings (--pool-mode and the pool options); off by default. */
  pool?: PoolSettings;
}

export async function startProxy(db: TestDb, options: TestProxyOptions = {}): Promise<TestProxy> {
  const { instance } = resolveInstance({
    endpoint: options.endpoint ?? `${db.endpoint}:${db.port}`,
    connectTo: options.connectTo ?? `127.0.0.1:${db.port}`,
    listen: options.listen ?? '127.0.0.1:0',
    caFile: options.caFile === null ? undefined : (options.caFile ?? db.caFile),
    region: options.region,
    dbUser: options.dbUser,
    clientTls: options.clientTls,
    clientTlsCert: options.clientTlsCert,
    clientTlsKey: options.clientTlsKey,
    clientPasswordFile: options.clientPasswordFile,
    allowUsers: options.allowUsers,
    allowDatabases: options.allowDatabases,
    allowUnauthenticatedNetworkClients: options.allowUnauthenticatedNetworkClients,
  });
  const config: ProxyConfig = {
    instances: [{ ...instance, pool: options.pool }],
    startupTimeoutMs: options.startupTimeoutMs ?? 5_000,
    connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
    maxConnections: options.maxConnections,
    shutdownGraceMs: 1_000,
  };
  const memory = memoryLog();
  const log = memory.log;
  let fetches = 0;
  let signatures = 0;
  const key = options.key ?? db.key;
  const credentials = new CredentialsHolder(async () => (fetches++, key), { onRefresh: () => undefined });
  const shared = options.tokens ?? new SharedTokens(credentials, { onSigned: () => signatures++ });
  const issued: IamToken[] = [];
  const tokens: TokenSource = {
    label: shared.label,
    async get(scope: TokenScope, notThis?: IamToken) {
      const token = await shared.get(scope, notThis);
      if (!issued.includes(token)) issued.push(token);
      return token;
    },
  };
  const proxy = new Engine(config, { ...awsSeams(() => tokens), log });
  const [address] = await proxy.listen();
  const close = async (graceMs = 1_000) => void (await proxy.close(graceMs));
  return {
    proxy,
    port: address!.port,
    issued,
    signed: () => signatures,
    credentialFetches: () => fetches,
    logs: memory.lines,
    line: memory.line,
    rawLogs: memory.raw,
    close,
    [Symbol.asyncDispose]: () => close(),
  };
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a libpq program (psql, pgbench) with a clean PG* environment. */
export function runPg(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG')));
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...clean, PGCONNECT_TIMEOUT: '10', ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** A loopback port with nothing listening on it. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}
