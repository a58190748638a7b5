// The only reader of argv and the environment: turns them into a frozen ProxyConfig and runs the engine.
import type { Logger } from 'pino';
import yargs, { type Argv } from 'yargs';
import { announce, Identities } from './aws/identity.js';
import { terminalMfa } from './aws/mfa.js';
import { ConfigError, DEFAULT_LISTEN, resolveInstance, type InstanceConfig, type ProxyConfig } from './config.js';
import { createLogger, type LogFormat } from './log.js';
import { Proxy } from './proxy/server.js';

/** Process exit codes a supervisor can act on. */
export const ExitCode = {
  Ok: 0,
  Failure: 1, // could not start (a port in use, an unreadable CA file)
  Usage: 2, // bad configuration
  Interrupted: 130, // second SIGINT: 128 + 2
  Terminated: 143, // second SIGTERM: 128 + 15
} as const;

const ENV_PREFIX = 'PG_IAM_PROXY';

function serveOptions<T>(y: Argv<T>) {
  return y
    .positional('endpoint', { type: 'string', describe: 'RDS endpoint name[:port] that tokens are signed for and TLS verifies', demandOption: true })
    .option('listen', { type: 'string', default: DEFAULT_LISTEN, describe: 'TCP listener ADDR:PORT (loopback by default)' })
    .option('connect-to', { type: 'string', describe: 'dial HOST:PORT instead of the endpoint (a tunnel); TLS and tokens stay for the endpoint' })
    .option('ca-file', { type: 'string', describe: 'PEM bundle to trust for the server certificate instead of the bundled RDS CAs' })
    .option('region', { type: 'string', describe: 'signing region (default: from the endpoint name, else AWS_REGION)' })
    .option('db-user', { type: 'string', describe: 'log in as this DB user whatever the client sends' })
    .option('profile', { type: 'string', describe: 'AWS profile to sign with (default: the SDK default chain, AWS_PROFILE)' })
    .option('role-arn', { type: 'string', describe: 'IAM role to assume from the base credentials, and sign as' })
    .option('role-session-name', { type: 'string', describe: 'session name for --role-arn (default: pg-iam-proxy@HOSTNAME)' })
    .option('external-id', { type: 'string', describe: "external ID the role's trust policy demands" })
    .option('mfa-serial', { type: 'string', describe: "MFA device the role's trust policy demands; the code is asked on the terminal" })
    .option('max-connections', { type: 'number', describe: 'clients beyond this get FATAL 53300 (default: unlimited)' })
    .option('startup-timeout', { type: 'number', default: 15, describe: 'seconds a client has to finish its startup' })
    .option('connect-timeout', { type: 'number', default: 10, describe: 'seconds to connect, handshake and log in upstream' })
    .option('shutdown-grace', { type: 'number', default: 30, describe: 'on SIGTERM/SIGINT, seconds to wait for sessions to end' })
    .option('log-level', { type: 'string', default: 'info', choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] })
    .option('log-format', { type: 'string', choices: ['json', 'pretty'], describe: 'default: pretty on a terminal, else json' });
}

type ServeArgs = Awaited<ReturnType<typeof serveOptions>['argv']>;

const positiveSeconds = (name: string, value: number) => {
  if (!Number.isFinite(value) || value <= 0) throw new ConfigError(`--${name}: a number of seconds greater than 0`);
  return Math.round(value * 1000);
};

/** Cross-field validation in one place (STYLE.md): argv and env in, frozen config out. */
export function serveConfig(args: ServeArgs, env: NodeJS.ProcessEnv): { config: ProxyConfig; warnings: string[] } {
  const { instance, warnings } = resolveInstance(
    {
      endpoint: args.endpoint,
      listen: args.listen,
      connectTo: args['connect-to'],
      region: args.region,
      caFile: args['ca-file'],
      dbUser: args['db-user'],
      profile: args.profile,
      roleArn: args['role-arn'],
      roleSessionName: args['role-session-name'],
      externalId: args['external-id'],
      mfaSerial: args['mfa-serial'],
    },
    env.AWS_REGION ?? env.AWS_DEFAULT_REGION,
  );
  const max = args['max-connections'];
  if (max !== undefined && !(Number.isInteger(max) && max > 0)) throw new ConfigError('--max-connections: a whole number greater than 0');
  const config: ProxyConfig = Object.freeze({
    instances: Object.freeze([instance]),
    startupTimeoutMs: positiveSeconds('startup-timeout', args['startup-timeout']),
    connectTimeoutMs: positiveSeconds('connect-timeout', args['connect-timeout']),
    maxConnections: max,
    shutdownGraceMs: Math.max(0, Math.round(args['shutdown-grace'] * 1000)),
  });
  return { config, warnings };
}

function logOptions(args: ServeArgs) {
  const format = (args['log-format'] as LogFormat | undefined) ?? (process.stderr.isTTY ? 'pretty' : 'json');
  return { level: args['log-level'], format };
}

/** Run the proxy until a signal; resolves to the exit code. */
async function serve(args: ServeArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const { config, warnings } = serveConfig(args, env);
  const log = createLogger(logOptions(args));
  for (const warning of warnings) log.warn(warning);
  routeProcessWarnings(log);
  const identities = new Identities({ log, mfa: terminalMfa() });
  const proxy = new Proxy(config, { tokensFor: signerFor(identities), log });
  try {
    await proxy.listen();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    log.fatal({ err }, e.code === 'EADDRINUSE' ? `cannot listen: address in use (${e.message})` : `cannot start: ${e.message}`);
    await flush(log);
    return ExitCode.Failure;
  }
  // Fetch credentials now, so the first client does not wait; failure is not fatal: they may come later.
  void announceAll(config, identities, log);
  const code = await untilSignal(proxy, log);
  identities.close();
  await flush(log);
  return code;
}

/** Node's process warnings (the SDK's Node version notice among them) as log lines, not stray stderr text. */
function routeProcessWarnings(log: Logger): void {
  process.removeAllListeners('warning');
  process.on('warning', (warning) => log.warn({ warning: { name: warning.name, message: warning.message } }, 'Node.js warning'));
}

/** Each instance signs as its identity; instances with the same identity share one holder and cache. */
export function signerFor(identities: Identities) {
  return (instance: InstanceConfig) => identities.for(instance.identity, instance.region).tokens;
}

/** Log who signs for each identity in use, once each. */
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

/** First SIGINT/SIGTERM: drain and exit 0. A second: exit at once with 128 + signal. */
function untilSignal(proxy: Proxy, log: Logger): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        resolve(signal === 'SIGINT' ? ExitCode.Interrupted : ExitCode.Terminated);
        return;
      }
      stopping = true;
      log.info({ signal, graceSeconds: proxy.config.shutdownGraceMs / 1000 }, 'shutting down: no new connections, waiting for sessions to end');
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

const flush = (log: Logger) => new Promise<void>((resolve) => log.flush(() => resolve()));

/** Entry point: parse, run, resolve to the exit code. Never throws. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let code: number = ExitCode.Ok;
  try {
    await yargs(argv)
      .scriptName('pg-iam-proxy')
      .env(ENV_PREFIX)
      .command(
        ['serve <endpoint>', '$0 <endpoint>'],
        'run the proxy (the default command)',
        (y) => serveOptions(y),
        async (args) => {
          code = await serve(args as ServeArgs, env);
        },
      )
      .strict()
      .help()
      .version()
      .wrap(Math.min(110, process.stdout.columns || 100))
      .fail((message, err) => {
        throw err ?? new ConfigError(message);
      })
      .parseAsync();
  } catch (err) {
    process.stderr.write(`pg-iam-proxy: ${(err as Error).message}\n`);
    return err instanceof ConfigError || !(err instanceof Error) || (err as Error).name === 'YError' ? ExitCode.Usage : ExitCode.Failure;
  }
  return code;
}
