// The engine's two seams to a cloud, as cloud-sql-proxy keeps a Dialer and a token source apart from its
// engine: how to reach an instance over verified TLS (Connector), and how to answer its password request
// (Authenticator), with the cloud's own words when that fails. src/proxy/ knows these and nothing of any
// cloud; each cloud (src/aws/, src/azure/, src/gcp/) implements them, and commands/wiring.ts gives each
// instance its pair. A cloud as a whole is a Cloud (below): src/clouds/table.ts lists them, and nothing
// outside a cloud's folder and that table tells the clouds apart by name.
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { InstanceConfig, InstanceInput } from './config.js';
import type { DoctorRun, DoctorStep } from './doctor/walk.js';
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

/** An instance's two seams, as its cloud makes them. */
export interface CloudSeams {
  readonly authenticatorFor: (instance: InstanceConfig) => Authenticator;
  readonly connectorFor: (instance: InstanceConfig, connectTimeoutMs: number) => Connector;
}

/**
 * What an instance's cloud settles from its settings, once the listeners are known: what tokens are made
 * for, where to dial, in which region, signed by whom.
 */
export type CloudPart = Pick<InstanceConfig, 'endpoint' | 'connectTo' | 'region' | 'identity' | 'cloudSql'>;

/** What config.ts lends a cloud reading its settings (config.ts imports the clouds, not the other way). */
export interface SettingsContext {
  /** AWS_REGION (or AWS_DEFAULT_REGION), the signing region's last resort. */
  readonly envRegion: string | undefined;
  /** The error for a bad setting, to throw: the CLI says `message` and exits 2. */
  fail(message: string): Error;
  /** HOST[:PORT], its errors bad settings (`what` names the setting). */
  hostPort(text: string, what: string): HostPort;
  /** Whether only this machine's processes can reach `host`. */
  isLoopback(host: string): boolean;
  /** The signing identity from its settings (profile, role, ...), checked. */
  identity(): InstanceConfig['identity'];
}

/** How a cloud's instances take their settings. */
export interface CloudSettings {
  /** Where its credentials come from, in people's words (said when another cloud's identity setting is given). */
  readonly credentialsFrom: string;
  /**
   * The error for a setting only this cloud takes, given for another cloud's instance (`other`, in
   * people's words, and where its credentials come from); undefined when there is none.
   */
  refuseOn(input: InstanceInput, other: { readonly title: string; readonly credentialsFrom: string }): string | undefined;
  /** The instance's endpoint, dial address, region and identity; `warnings` gets what is worth saying at start. */
  resolve(input: InstanceInput, context: SettingsContext, warnings: string[]): CloudPart;
}

/** A cloud's doctor: its checks for one instance, in order, each a step of the walk (src/doctor/walk.ts). */
export type CloudDoctor<Process> = (instance: InstanceConfig, run: DoctorRun, process: Process) => readonly DoctorStep[];

/**
 * One cloud: everything the proxy asks of it. `Process` is what it needs of the process it runs in (the
 * holders of its credentials, one per process, which the commands make); src/clouds/table.ts lists the
 * clouds and says what a process holds.
 */
export interface Cloud<Process> {
  /** Its name in people's words ("AWS RDS/Aurora"). */
  readonly title: string;
  /** Whether an endpoint's form is this cloud's (an RDS endpoint name, a Cloud SQL connection name, ...). */
  recognises(endpoint: string): boolean;
  readonly settings: CloudSettings;
  /** Its instances' seams in one process (made once per process: they share its trust and tokens). */
  seams(process: Process): CloudSeams;
  /**
   * Get the credentials `instance` logs in with, each once (`seen` holds what was announced already), and
   * log whose they are; each job resolves to whether they could be had.
   */
  announce(process: Process, instance: InstanceConfig, log: Logger, seen: Set<unknown>): Array<Promise<boolean>>;
  /** One token for `user` (`pg-iam-proxy token`), after the checks a login makes before anything is sent. */
  token(process: Process, instance: InstanceConfig, user: string): Promise<string>;
  /** Its doctor, loaded when doctor runs. */
  doctor(): Promise<CloudDoctor<Process>>;
  /** The environment variables that hold its credentials themselves: `run` keeps them from the command. */
  readonly credentialVariables: readonly string[];
  /** What its credentials are called in messages ("AWS credentials"). */
  readonly credentialsNoun: string;
  /** How it comes by a token: signs one itself, or gets one from its identity service. */
  readonly tokenVerb: 'sign' | 'get';
  /** Whether the config file's top-level `aws:` identity is its instances' identity. */
  readonly fileAwsIdentity: boolean;
}
