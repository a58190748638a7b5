// An OAuth access token as the password, behind the engine's Authenticator seam: the clouds that log in
// with one work alike (one token per identity, whatever the DB user; the server checks the principal
// against the user). What differs is what each cloud says when a login fails: its TokenErrorWording.
import type { Authenticator, Token } from '../cloud.js';
import { redactSecrets } from '../log.js';
import { SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import type { BearerToken, BearerTokens } from './tokens.js';

/** What only the cloud can say when its token cannot be had or is refused, in the client's error. */
export interface TokenErrorWording {
  /** The token, in people's words ("a Microsoft Entra ID access token"). */
  readonly tokenName: string;
  /** What to run where the proxy runs to see that credentials can be had. */
  readonly tryCommand: string;
  rejection(user: string, token: BearerToken, label: string): { readonly detail: string; readonly hint: string };
  notTokenUser(user: string, method: string): WireError;
  refuseUser?(user: string): WireError | undefined;
}

export class BearerAuthenticator implements Authenticator {
  constructor(
    private readonly tokens: BearerTokens,
    private readonly wording: TokenErrorWording,
  ) {}

  get label(): string {
    return this.tokens.label;
  }

  async token(_user: string, notThis?: Token): Promise<BearerToken> {
    try {
      return await this.tokens.get(notThis);
    } catch (err) {
      // DefaultAzureCredential says what each credential in its chain answered, a line each: those go in DETAIL.
      const [first, ...tried] = redactSecrets((err as Error).message)
        .split('\n')
        .filter(Boolean);
      throw new WireError(SqlState.UnableToConnect, `pg-iam-proxy could not get ${this.wording.tokenName}: ${first ?? 'no reason given'}`, {
        reason: Failure.NoCredentials,
        detail: tried.length > 0 ? `Credentials from ${this.label}, tried in order: ${tried.join(' ')}` : `Credentials from ${this.label}.`,
        hint: `Check that \`${this.wording.tryCommand}\` works where the proxy runs, as the same user. The proxy keeps serving and logs in as soon as a token can be had.`,
        cause: err,
      });
    }
  }

  tokenTimeout(ms: number): WireError {
    return new WireError(SqlState.UnableToConnect, `pg-iam-proxy got no access token from ${this.label} within ${ms / 1000} s`, {
      reason: Failure.CredentialsTimeout,
      hint: `The credential source is slow or hanging. The proxy keeps trying; check that \`${this.wording.tryCommand}\` answers quickly where the proxy runs, or raise --connect-timeout.`,
    });
  }

  rejection(user: string, token: Token): { detail: string; hint: string } {
    return this.wording.rejection(user, token as BearerToken, this.label);
  }

  notTokenUser(user: string, method: string): WireError {
    return this.wording.notTokenUser(user, method);
  }

  refuseUser(user: string): WireError | undefined {
    return this.wording.refuseUser?.(user);
  }
}
