// `pg-iam-proxy doctor` from the command line: the instance its ENDPOINT names (settings.ts), every check
// (doctor.ts) in order, printed for people or as JSON.
import { regionFromEndpoint } from '../aws/endpoint.js';
import { Identities } from '../aws/identity.js';
import { terminalMfa } from '../aws/mfa.js';
import { ms } from '../config.js';
import { createLogger } from '../log.js';
import { defaultFor, type Args } from '../options.js';
import { routeProcessWarnings } from './command-log.js';
import { ExitCode } from './serve.js';
import { commandInstance } from './settings.js';

/** `doctor`: exit 0 only when a real login succeeded. */
export async function doctorCommand(args: Args<'doctor'>, env: NodeJS.ProcessEnv): Promise<number> {
  const { instance, warnings } = commandInstance(args, env);
  const log = createLogger({ level: 'silent', format: 'json' });
  routeProcessWarnings(log);
  const identities = new Identities({ mfa: terminalMfa() });
  const { CloudCredentials } = await import('../clouds/credentials.js');
  const clouds = new CloudCredentials();
  try {
    const { formatReport, runDoctor } = await import('./doctor.js');
    const report = await runDoctor(instance, {
      // Required (demandOption): yargs refused the command line without it.
      user: args.user!,
      database: args.database ?? defaultFor('database', 'doctor')!,
      connectTimeoutMs: ms(args['connect-timeout'] ?? defaultFor('connect-timeout', 'doctor')!),
      identities,
      configWarnings: warnings,
      clouds,
      regionSource: args.region ? 'flag' : regionFromEndpoint(instance.endpoint.host) ? 'endpoint' : 'env',
    });
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report, process.stdout.isTTY === true));
    return report.ok ? ExitCode.Ok : ExitCode.Failure;
  } finally {
    identities.close();
    clouds.close();
  }
}
