// `pg-iam-proxy serve` from the command line: its settings (settings.ts), its log, then the proxy
// (serve.ts) until a signal, with SIGHUP reading the --config file again.
import { finishLog } from '../log.js';
import type { Args } from '../options.js';
import { commandLog } from './command-log.js';
import { serve } from './serve.js';
import { serveConfig } from './settings.js';

/** `serve`: the proxy until a signal; resolves to the exit code. */
export async function serveCommand(args: Args<'serve'>, env: NodeJS.ProcessEnv): Promise<number> {
  const settings = serveConfig(args, env);
  const log = commandLog(settings.log, settings.warnings);
  const code = await serve(settings.config, {
    http: settings.http,
    requireCredentials: settings.requireCredentials,
    minSigtermDelayMs: settings.minSigtermDelayMs,
    exitZeroOnSigterm: settings.exitZeroOnSigterm,
    log,
    // SIGHUP: the file read again, with the same flags and environment over it.
    reload: args.config ? () => serveConfig(args, env) : undefined,
  });
  // The log's last lines, however stderr is connected: never a reason not to exit.
  await finishLog(log);
  return code;
}
