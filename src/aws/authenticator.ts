// RDS IAM authentication behind the engine's Authenticator seam: a token signed for the instance's
// endpoint, port and region and the DB user, from the identity's shared cache; and AWS's own words when
// none can be had or the server refuses one.
import type { Authenticator, Token } from '../cloud.js';
import type { HostPort } from '../host-port.js';
import { redactSecrets } from '../log.js';
import { SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { quoteIdent } from '../sql-quote.js';
import { notIamUser, rejectionChecklist } from './hints.js';
import { NoCredentialsError } from './identity.js';
import type { IamToken, TokenScope, TokenSource } from './tokens.js';

/** AKIA…WXYZ: enough for an operator to tell keys apart, little for whoever reaches the listener. */
export const shortKey = (id: string): string => (id.length > 8 ? `${id.slice(0, 4)}…${id.slice(-4)}` : id);

export class RdsAuthenticator implements Authenticator {
  constructor(
    private readonly tokens: TokenSource,
    private readonly endpoint: HostPort,
    private readonly region: string,
  ) {}

  get label(): string {
    return this.tokens.label ?? 'the configured identity';
  }

  private scope(user: string): TokenScope {
    return { host: this.endpoint.host, port: this.endpoint.port, region: this.region, user };
  }

  async token(user: string, notThis?: Token): Promise<IamToken> {
    try {
      return await this.tokens.get(this.scope(user), notThis as IamToken | undefined);
    } catch (err) {
      const tried = err instanceof NoCredentialsError && err.tried.length > 0 ? err.describeTried() : undefined;
      throw new WireError(SqlState.UnableToConnect, `pg-iam-proxy could not sign an IAM token: ${redactSecrets((err as Error).message)}`, {
        reason: Failure.NoCredentials,
        ...(tried ? { detail: `Sources tried, in order: ${tried}.` } : {}),
        hint: 'Check that `aws sts get-caller-identity` works where the proxy runs, with the same profile or role. The proxy keeps serving and signs as soon as credentials can be had.',
        cause: err,
      });
    }
  }

  tokenTimeout(ms: number): WireError {
    return new WireError(SqlState.UnableToConnect, `pg-iam-proxy got no AWS credentials for ${this.label} within ${ms / 1000} s`, {
      reason: Failure.CredentialsTimeout,
      hint: 'The credential source is slow or hanging (credential_process, SSO, instance metadata, STS). The proxy keeps trying; check that `aws sts get-caller-identity` answers quickly where the proxy runs, with the same profile or role, or raise --connect-timeout.',
    });
  }

  rejection(user: string, token: Token): { detail: string; hint: string } {
    const { accessKeyId } = token as IamToken;
    const scope = this.scope(user);
    return {
      detail: `pg-iam-proxy signed with access key ${shortKey(accessKeyId)} for ${scope.host}:${scope.port}, region ${scope.region}, user ${quoteIdent(user)}.`,
      hint: rejectionChecklist(scope),
    };
  }

  notTokenUser(user: string, method: string): WireError {
    return notIamUser(user, method);
  }
}
