// The engine's two seams to a cloud, as cloud-sql-proxy keeps a Dialer and a token source apart from its
// engine: how to reach an instance over verified TLS (Connector), and how to answer its password request
// (Authenticator), with the cloud's own words when that fails. src/proxy/ knows these and nothing of any
// cloud; each cloud (src/aws/, src/azure/, src/gcp/) implements them, and commands/wiring.ts gives each
// instance its pair.
import type { TLSSocket } from 'node:tls';
import type { HostPort } from './host-port.js';
import type { WireError } from './protocol/errors.js';

/** A password for logins: a cloud's short-lived token. `value` is never logged nor put in an error. */
export interface Token {
  readonly value: string;
  /** When it was made, ms since the epoch: a token made for this login is fresh, an older one cached. */
  readonly signedAt: number;
  /** Log fields that say who made it (AWS: the access key ID); never a secret. */
  readonly signer: Readonly<Record<string, string>>;
}

/** Answers the server's password request for one instance. */
export interface Authenticator {
  /** Who signs, in people's words ("profile app", "role ... assumed from ..."). */
  readonly label: string;
  /**
   * A token for `user` (a cache hit in the steady state); `notThis`: one the server just refused, so a
   * fresh one is wanted. Rejects with a WireError the client can read when none can be had.
   */
  token(user: string, notThis?: Token): Promise<Token>;
  /** The client's error when no token came within `ms` (a slow credential source). */
  tokenTimeout(ms: number): WireError;
  /** What only the cloud can say of a refused token: what was signed (DETAIL) and the causes to check (HINT). */
  rejection(user: string, token: Token): { readonly detail: string; readonly hint: string };
  /** The server asked for another kind of password (`method`): the user is not set up for token logins. */
  notTokenUser(user: string, method: string): WireError;
  /** A user name this cloud never accepts, refused before anything is dialled; undefined: go ahead. */
  refuseUser?(user: string): WireError | undefined;
}

/** Opens verified TLS connections to one instance. */
export interface Connector {
  /** The name tokens are made for and the certificate must carry. */
  readonly endpoint: HostPort;
  /** Where connections go: the endpoint, or a tunnel or pinned address. */
  readonly connectTo: HostPort;
  /** A connection whose certificate was verified for `endpoint`; `signal` abandons it. */
  connect(signal?: AbortSignal): Promise<TLSSocket>;
  /**
   * The cloud's words for a failure on a connection it made, seen only later in the login (a TLS 1.3 server
   * refusing the client's certificate after the handshake); undefined: the failure as it is.
   */
  explain?(err: unknown): WireError | undefined;
}

/** Advice only the cloud can give, attached to the engine's TLS errors. */
export interface ConnectHints {
  /** No trusted CA vouches for the server's certificate (which bundle to get, and how to pass it). */
  readonly untrusted: string;
  /** The certificate names another host (what name to use, and how to dial something else). */
  readonly nameMismatch: string;
  /** The server declines TLS (this cloud always offers it, so the dial address is wrong). */
  readonly noTls: string;
}
