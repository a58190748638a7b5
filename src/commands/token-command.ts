// `pg-iam-proxy token` from the command line: the instance its ENDPOINT names (settings.ts), one token
// on stdout and nothing else there, as `aws rds generate-db-auth-token` (or `az account get-access-token
// --resource-type oss-rdbms`, `gcloud sql generate-login-token`) prints it; errors on stderr. The token is
// the cloud's (Cloud.token): signed for the endpoint with the user's identity, or the cloud's access token.
import { cloudOf } from '../clouds/table.js';
import { Identities, NoCredentialsError } from '../aws/identity.js';
import { terminalMfa } from '../aws/mfa.js';
import { finishLog, redactSecrets } from '../log.js';
import type { Args } from '../options.js';
import { commandLog } from './command-log.js';
import { ExitCode } from './serve.js';
import { commandInstance } from './settings.js';

/** `token`: one token on stdout; resolves to the exit code. */
export async function tokenCommand(args: Args<'token'>, env: NodeJS.ProcessEnv): Promise<number> {
  const { instance, warnings } = commandInstance(args, env);
  const log = commandLog({ level: 'warn', format: undefined }, warnings);
  const identities = new Identities({ mfa: terminalMfa() });
  const { CloudCredentials } = await import('../clouds/credentials.js');
  const clouds = new CloudCredentials();
  try {
    // Required (demandOption): yargs refused the command line without it.
    process.stdout.write(`${await cloudOf(instance.cloud).token({ identities, clouds }, instance, args.user!)}\n`);
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
