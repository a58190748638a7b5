// `pg-iam-proxy token` from the command line: the instance its ENDPOINT names (settings.ts), one token
// (token.ts) on stdout and nothing else there; errors on stderr.
import { cloudOf } from '../clouds/table.js';
import { Identities, NoCredentialsError } from '../aws/identity.js';
import { terminalMfa } from '../aws/mfa.js';
import { createLogger, finishLog, redactSecrets } from '../log.js';
import type { Args } from '../options.js';
import { routeProcessWarnings } from './command-log.js';
import { ExitCode } from './serve.js';
import { commandInstance } from './settings.js';

/** `token`: one token on stdout; resolves to the exit code. */
export async function tokenCommand(args: Args<'token'>, env: NodeJS.ProcessEnv): Promise<number> {
  const { instance, warnings } = commandInstance(args, env);
  const log = createLogger({ level: 'warn', format: process.stderr.isTTY ? 'pretty' : 'json' });
  for (const warning of warnings) log.warn(warning);
  routeProcessWarnings(log);
  const identities = new Identities({ mfa: terminalMfa() });
  const { CloudCredentials } = await import('../clouds/credentials.js');
  const clouds = new CloudCredentials();
  try {
    const { signToken } = await import('./token.js');
    // Required (demandOption): yargs refused the command line without it.
    process.stdout.write(`${await signToken(instance, args.user!, identities, clouds)}\n`);
    return ExitCode.Ok;
  } catch (err) {
    const tried = err instanceof NoCredentialsError && err.tried.length > 0 ? `\n  sources tried: ${err.describeTried()}` : '';
    process.stderr.write(
      `pg-iam-proxy: cannot ${cloudOf(instance.cloud).tokenVerb} a token: ${redactSecrets((err as Error).message)}${tried}\n`,
    );
    return ExitCode.Failure;
  } finally {
    identities.close();
    clouds.close();
    await finishLog(log);
  }
}
