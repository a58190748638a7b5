// `pg-iam-proxy doctor` for the clouds that log in with an access token: the same walk as for RDS, in
// each cloud's terms. The token first (who it names, for what), the names (the endpoint, the user), the
// cloud's own checks, then the connection through the proxy's own connector (TCP, TLS, the certificate's
// identity) and a real login, whose refusal is explained cause by cause. What differs by cloud is its
// BearerDoctor (src/azure/doctor.ts, src/gcp/doctor.ts).
import type { TLSSocket } from 'node:tls';
import type { Connector } from '../cloud.js';
import type { InstanceConfig } from '../config.js';
import { checkPooling } from '../doctor/pooling.js';
import { checklistLines, type DoctorRun, type DoctorStep, doctorStartup, missingDatabaseFix, type Outcomes } from '../doctor/walk.js';
import { formatHostPort } from '../host-port.js';
import { redactSecrets } from '../log.js';
import { TERMINATE_MESSAGE } from '../protocol/constants.js';
import { Failure, type WireError } from '../protocol/errors.js';
import { loginUpstream, PasswordMethodRefused, TokenRejected } from '../upstream/auth.js';
import type { TokenErrorWording } from './authenticator.js';
import type { BearerToken, BearerTokens } from './tokens.js';

/** What a cloud says and checks in the walk. */
export interface BearerDoctor {
  /** The cloud in people's words, for the login line. */
  readonly title: string;
  /** The titles of the credentials and the names checks ("Azure credentials (DefaultAzureCredential)"). */
  readonly credentialsTitle: string;
  readonly namesTitle: string;
  readonly tokens: BearerTokens;
  readonly wording: TokenErrorWording;
  /** The fix when no token can be had: how to make the cloud's credentials work here. */
  readonly noTokenFix: string;
  /** The credentials check's outcome for a token (or a failure thrown); resolves to the principal it names, when known. */
  describeToken(token: BearerToken, outcomes: Outcomes): Promise<string | undefined>;
  /** The names check: the endpoint's form, the user against the token's principal. */
  checkNames(principal: string | undefined, outcomes: Outcomes): void;
  /** The cloud's own steps between the names and the connection (Cloud SQL: the instance, as its API describes it). */
  readonly ownSteps?: readonly DoctorStep[];
  /** The instance's connector, made once the names are checked. */
  connector(): Connector;
  /** What the certificate is verified for, in the certificate check's line. */
  readonly verifiedFor: string;
}

export function bearerDoctor(instance: InstanceConfig, options: DoctorRun, cloud: BearerDoctor): readonly DoctorStep[] {
  const { user } = options;
  const { tokens } = cloud;
  let token: BearerToken | undefined;
  let principal: string | undefined;
  let connector!: Connector;
  let server: TLSSocket | undefined;
  return [
    {
      checks: [['credentials', cloud.credentialsTitle]],
      // 1. A token, and who it names. Without one the walk goes on to what needs none (names, TCP, TLS, the certificate).
      run: async (outcomes) => {
        try {
          token = await tokens.get();
        } catch (err) {
          outcomes.fail(
            'credentials',
            `${tokens.label} gave no token: ${redactSecrets((err as Error).message).replace(/\s*\n\s*/g, ' ')}`,
            cloud.noTokenFix,
          );
          return;
        }
        principal = await cloud.describeToken(token, outcomes);
      },
    },
    {
      checks: [['endpoint', cloud.namesTitle]],
      // 2. Names: the endpoint's form, the user against the principal.
      run: (outcomes) => {
        cloud.checkNames(principal, outcomes);
        connector = cloud.connector();
      },
    },
    ...(cloud.ownSteps ?? []),
    {
      checks: [
        ['tcp', 'TCP connection'],
        ['tls', 'TLS offered by the server'],
        ['certificate', 'Server certificate'],
      ],
      // 3. The connection through the proxy's own connector: each failure belongs to one check.
      run: async ({ set, fail }) => {
        try {
          server = await connector.connect(AbortSignal.timeout(options.connectTimeoutMs));
        } catch (err) {
          const e = (connector.explain?.(err) ?? err) as WireError;
          const id =
            e.reason === Failure.UpstreamUnreachable || e.reason === Failure.UpstreamTimeout
              ? 'tcp'
              : e.reason === Failure.UpstreamNoTls || e.reason === Failure.UpstreamProtocol
                ? 'tls'
                : 'certificate';
          if (id !== 'tcp') set('tcp', 'pass', `connected to ${formatHostPort(connector.connectTo)}`);
          if (id === 'certificate') set('tls', 'pass', 'the server accepts TLS');
          throw fail(id, redactSecrets(e.message) + (e.detail ? ` (${e.detail})` : ''), e.hint);
        }
        set('tcp', 'pass', `connected to ${formatHostPort(connector.connectTo)}`);
        set('tls', 'pass', `the server accepts TLS (${server.getProtocol()})`);
        const cert = server.getPeerCertificate();
        const validTo = new Date(cert.valid_to).toISOString();
        set(
          'certificate',
          'pass',
          `issued by ${cert.issuer?.CN ?? cert.issuer?.O ?? 'unknown issuer'} to ${cert.subject?.CN ?? 'no CN'}${cert.subjectaltname ? ` (${cert.subjectaltname})` : ''}, verified for ${cloud.verifiedFor}, valid until ${validTo}`,
          undefined,
          { subject: cert.subject?.CN, issuer: cert.issuer?.CN, names: cert.subjectaltname, validTo },
        );
      },
      finish: () => server?.destroy(),
    },
    {
      checks: [
        ['login', 'Login'],
        ['pooling', 'Pooling against the server'],
      ],
      needs: { met: () => token !== undefined, skipped: 'not checked: it needs a token, which could not be had (above)' },
      // 4. A real login with the token.
      run: async (outcomes) => {
        const { set, fail } = outcomes;
        const had = token!;
        const live = server!;
        let login: Awaited<ReturnType<typeof loginUpstream>>;
        try {
          login = await loginUpstream(live, doctorStartup(user, options.database), {
            token: async () => had,
            signal: AbortSignal.timeout(options.connectTimeoutMs),
          });
        } catch (err) {
          if (err instanceof TokenRejected) {
            const { hint } = cloud.wording.rejection(user, had, tokens.label);
            throw fail('login', `the server rejected the access token: ${err.message}`, checklistLines(hint));
          }
          const e =
            err instanceof PasswordMethodRefused
              ? cloud.wording.notTokenUser(user, err.method)
              : ((connector.explain?.(err) ?? err) as WireError);
          throw fail('login', redactSecrets(e.message), e.hint);
        }
        if (login.failure) {
          throw fail(
            'login',
            `the token was accepted, then the server ended the session: ${login.failure}`,
            missingDatabaseFix(login.failure, options.database),
          );
        }
        set('login', 'pass', `logged in as "${user}" to database "${options.database}" with ${cloud.title}'s token over verified TLS`);
        await checkPooling(instance, outcomes, live, options.connectTimeoutMs);
        live.end(TERMINATE_MESSAGE);
      },
    },
  ];
}
