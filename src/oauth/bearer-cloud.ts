// What the clouds that log in with an access token share as clouds: one token holder per cloud per
// process (src/clouds/credentials.ts keeps them), announced once, and the token `pg-iam-proxy token` prints.
import type { Logger } from 'pino';
import type { Cloud } from '../cloud.js';
import type { TokenErrorWording } from './authenticator.js';
import type { BearerFetch, BearerTokens } from './tokens.js';

/** Where a cloud's tokens come from, made once per process. */
export interface BearerSource {
  readonly fetch: BearerFetch;
  /** The account the credentials stand for, when they say (a service account's email); undefined otherwise. */
  account?(): Promise<string | undefined>;
}

/** A cloud whose password is an access token from its SDK's credential chain. */
export interface BearerCloud<Process> extends Cloud<Process> {
  readonly bearer: {
    /** Who the tokens come from, in people's words (the credential chain: "DefaultAzureCredential"). */
    readonly label: string;
    /** The SDK's source of tokens, for one process. */
    source(): BearerSource;
  };
}

/** The token holders of one process, by cloud. */
export interface BearerHolders<Name extends string> {
  tokens(cloud: Name): BearerTokens;
  /** Fetch the cloud's token now and say whose it is; resolves to whether one came. */
  announce(cloud: Name, log: Logger): Promise<boolean>;
  /** The account the cloud's credentials stand for, when they say (BearerSource.account). */
  account(cloud: Name): Promise<string | undefined>;
}

/** The process's holders; undefined only when a command forgot to make them. */
export function holdersOf<Holders extends BearerHolders<Name>, Name extends string>(holders: Holders | undefined, cloud: Name): Holders {
  /* c8 ignore next -- the commands always pass them; a missing one is a wiring bug */
  if (!holders) throw new Error(`no credentials for ${cloud} instances were wired`);
  return holders;
}

/** The cloud's token, fetched once per process whatever its instances (`seen`: announced already). */
export function announceOnce<Name extends string>(
  holders: BearerHolders<Name> | undefined,
  cloud: Name,
  log: Logger,
  seen: Set<unknown>,
): Array<Promise<boolean>> {
  const jobs = holders && !seen.has(cloud) ? [holders.announce(cloud, log)] : [];
  seen.add(cloud);
  return jobs;
}

/** The token a login would send as `user`, after the checks made before anything is sent. */
export async function tokenFor(tokens: BearerTokens, wording: TokenErrorWording, user: string): Promise<string> {
  const refused = wording.refuseUser?.(user);
  if (refused) throw new Error(`${refused.message}. ${refused.hint}`);
  return (await tokens.get()).value;
}
