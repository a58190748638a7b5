// `pg-iam-proxy run ENDPOINT -- CMD` from the command line: a private socket directory, the settings
// (settings.ts) with the proxy's listener there, then the proxy for the life of the command (run.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Identities } from '../aws/identity.js';
import { terminalMfa } from '../aws/mfa.js';
import { ConfigError } from '../config.js';
import { finishLog } from '../log.js';
import type { Args } from '../options.js';
import { commandLog } from './command-log.js';
import { serveConfig } from './settings.js';

/** run's options, and the command after `--` (yargs' populate--). */
export type RunArgs = Args<'run'> & { '--'?: Array<string | number> };

/** `run`: the proxy on a private unix socket for the life of one command; resolves to the command's status. */
export async function runCommand(args: RunArgs, env: NodeJS.ProcessEnv): Promise<number> {
  const [command, ...commandArgs] = (args['--'] ?? []).map(String);
  if (!command) throw new ConfigError('run: no command given: pg-iam-proxy run ENDPOINT [options] -- CMD [ARGS...]');
  if (args.user !== undefined && (args.user === '' || Buffer.byteLength(args.user) > 63))
    throw new ConfigError('--user: a PostgreSQL user name of 1 to 63 bytes');
  // Absolute (libpq reads a PGHOST starting with / as a socket directory) and without commas (a host list).
  const dir = resolve(await mkdtemp(join(tmpdir(), 'pg-iam-proxy-')));
  if (dir.includes(',')) {
    await rm(dir, { recursive: true, force: true });
    throw new ConfigError(`run: the temporary directory ${dir} contains a comma, which libpq would read as a host list: set TMPDIR`);
  }
  try {
    const { config, warnings, log: logSettings } = serveConfig(args, env, { listen: null, unixSocket: dir, unixSocketMode: '0600' }, 'run');
    const log = commandLog(logSettings, warnings);
    const identities = new Identities({ log, mfa: terminalMfa() });
    try {
      const { runWithProxy } = await import('./run.js');
      return await runWithProxy(config, {
        command,
        args: commandArgs,
        user: args.user,
        env,
        log,
        identities,
        keepAwsEnv: args['keep-aws-env'] === true,
      });
    } finally {
      identities.close();
      await finishLog(log);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
