// Which AWS identity signs: the SDK's credential sources (the default chain, a profile, a role assumed
// from either), traced so a failure can name every source tried, held once per identity.
import type { ChildProcess } from 'node:child_process';
import { subscribe } from 'node:diagnostics_channel';
import { hostname } from 'node:os';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@aws-sdk/types';
import type { Logger } from 'pino';
import { SSO_WARN_AHEAD_MS, ssoSession } from './sso.js';
import { WakeWatch, type WakeWatchOptions } from './wake.js';
import { redactSecrets } from '../log.js';
import { CredentialsHolder, type CredentialsHolderOptions } from './credentials.js';
import { SharedTokens, type SharedTokensOptions } from './tokens.js';
import { timerDelay } from '../renewing.js';

// The SDK's credential providers and STS client load on first use: start-up to listening stays short.
type CredentialProviders = typeof import('@aws-sdk/credential-providers');
let providers: Promise<CredentialProviders> | undefined;

/** A provider made from the SDK's providers module on its first call, then reused. */
function lazily(make: (sdk: CredentialProviders) => AwsCredentialIdentityProvider): AwsCredentialIdentityProvider {
  let made: AwsCredentialIdentityProvider | undefined;
  return async (props) => (made ??= make(await (providers ??= import('@aws-sdk/credential-providers'))))(props);
}

/** An AWS identity as configured: `--profile`, `--role-arn` and the role's settings. */
export interface IdentitySpec {
  readonly profile?: string | undefined;
  readonly roleArn?: string | undefined;
  readonly roleSessionName?: string | undefined;
  readonly externalId?: string | undefined;
  /** The MFA device the role's trust policy demands (a profile names its own with mfa_serial). */
  readonly mfaSerial?: string | undefined;
}

/** How people name an identity in logs and errors. */
export function identityLabel(spec: IdentitySpec): string {
  const base = spec.profile ? `profile ${spec.profile}` : 'the default credential chain';
  return spec.roleArn ? `role ${spec.roleArn} assumed from ${base}` : base;
}

/** Two instances with the same identity share one credentials holder and one token cache. */
export const identityKey = (spec: IdentitySpec): string =>
  JSON.stringify([spec.profile, spec.roleArn, spec.roleSessionName, spec.externalId, spec.mfaSerial].map((v) => v ?? null));

/** CloudTrail shows this for the assumed role's sessions; [\w+=,.@-]{2,64} as STS demands. */
export function defaultRoleSessionName(host = hostname()): string {
  return `pg-iam-proxy@${host}`.replace(/[^\w+=,.@-]/g, '-').slice(0, 64);
}

/** The SDK marks credentials with the feature that produced them (`$source`); these are their names. */
const SOURCE_NAMES: ReadonlyArray<readonly [feature: string, name: string]> = [
  ['CREDENTIALS_PROFILE_SOURCE_PROFILE', 'a role profile (role_arn with source_profile)'],
  ['CREDENTIALS_PROFILE_NAMED_PROVIDER', 'a role profile (role_arn with credential_source)'],
  ['CREDENTIALS_PROFILE_SSO', 'AWS IAM Identity Center (SSO)'],
  ['CREDENTIALS_SSO', 'AWS IAM Identity Center (SSO)'],
  ['CREDENTIALS_PROFILE_SSO_LEGACY', 'AWS IAM Identity Center (SSO)'],
  ['CREDENTIALS_SSO_LEGACY', 'AWS IAM Identity Center (SSO)'],
  ['CREDENTIALS_PROFILE_LOGIN', 'an `aws login` session'],
  ['CREDENTIALS_LOGIN', 'an `aws login` session'],
  ['CREDENTIALS_PROFILE_STS_WEB_ID_TOKEN', 'a web identity token (profile web_identity_token_file)'],
  ['CREDENTIALS_ENV_VARS_STS_WEB_ID_TOKEN', 'a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE)'],
  ['CREDENTIALS_STS_ASSUME_ROLE_WEB_ID', 'a web identity token'],
  ['CREDENTIALS_PROFILE_PROCESS', 'credential_process'],
  ['CREDENTIALS_PROCESS', 'credential_process'],
  ['CREDENTIALS_STS_ASSUME_ROLE', 'an assumed role'],
  ['CREDENTIALS_HTTP', 'the container credentials endpoint (ECS, EKS Pod Identity)'],
  ['CREDENTIALS_IMDS', 'EC2 instance metadata (IMDSv2)'],
  ['CREDENTIALS_ENV_VARS', 'environment variables (AWS_ACCESS_KEY_ID)'],
  ['CREDENTIALS_PROFILE', 'the shared credentials file'],
];

/** The most specific source the SDK recorded on these credentials (not every chain step records one). */
export function sourceOf(creds: AwsCredentialIdentity): string | undefined {
  const features = (creds as { $source?: Record<string, string> }).$source ?? {};
  return SOURCE_NAMES.find(([feature]) => feature in features)?.[1];
}

/** Sources whose credentials end when a person's session ends: the proxy cannot renew them alone. */
export function renewalAdvice(source: string, spec: IdentitySpec): string | undefined {
  const profile = spec.profile ? ` --profile ${spec.profile}` : '';
  if (source.includes('SSO')) return `when the SSO session ends, run \`aws sso login${profile}\``;
  if (source.includes('aws login')) return `when the session ends, run \`aws login${profile}\``;
  if (source.includes('MFA code')) return 'each renewal asks for a new MFA code on the terminal';
  return undefined;
}

/** One step of the SDK's default chain and why it gave nothing. */
export interface SourceAttempt {
  readonly source: string;
  reason?: string;
}

const REMOTE = 'the container endpoint or EC2 instance metadata';

/** The chain's debug lines name each provider as it starts; these are their names for people. */
const CHAIN_STEPS: ReadonlyArray<readonly [marker: string, name: string]> = [
  ['defaultProvider::fromEnv', 'environment variables'],
  ['defaultProvider::fromSSO', 'SSO settings'],
  ['defaultProvider::fromIni', 'the shared config and credentials files'],
  ['defaultProvider::fromProcess', 'credential_process'],
  ['defaultProvider::fromTokenFile', 'a web identity token file'],
  ['defaultProvider::remoteProvider', REMOTE],
  ['remoteProvider::fromHttp', 'the ECS/EKS container endpoint'],
  ['remoteProvider::fromInstanceMetadata', 'EC2 instance metadata (IMDSv2)'],
];
const PROVIDER_ERROR = /^@smithy\/property-provider (?:->|\(!\)) (.*)$/s;
/**
 * A setting looked up in the environment, then the config file (the SDK says so in the same words as a
 * source's failure): not why the source failed.
 */
const SETTING_LOOKUP = /not set in env, checking config file next|^Not found in (?:ENV|config files)\b/i;
/** The chain's own last words: no source had credentials. Each source's reason says why, not this. */
const CHAIN_EXHAUSTED = 'Could not load credentials from any providers';
/** Why a remote source that said nothing failed (the SDK keeps its error to itself). */
const REMOTE_SILENT: Record<string, string> = {
  'EC2 instance metadata (IMDSv2)':
    'no credentials from the instance metadata service: not an EC2 instance, no instance role attached, or IMDS unreachable; AWS_EC2_METADATA_DISABLED=true skips it',
  'the ECS/EKS container endpoint': 'no credentials from the container credentials endpoint: it did not answer',
};
/** A role profile's base: the SDK names the profile it turns to next. */
const SOURCE_PROFILE = /finding credential resolver using source_profile=\[([^\]]*)\]/;

/**
 * How each shell command this process ran last ended, by its command line. The SDK runs credential_process
 * with exec (`/bin/sh -c LINE`) and keeps only the error's message, "Command failed: LINE\nSTDERR", which
 * has no exit status; Node's child_process diagnostics channel (documented, observe-only) still sees the
 * child. Bounded: one entry per distinct command, the oldest dropped first.
 */
const shellExits = new Map<string, { readonly code: number | null; readonly signal: NodeJS.Signals | null }>();
let watchingChildren = false;

function watchChildExits(): void {
  if (watchingChildren) return;
  watchingChildren = true;
  subscribe('child_process', (message) => {
    const child = (message as { process?: ChildProcess }).process;
    child?.once('exit', (code, signal) => {
      const [, flag, line] = child.spawnargs;
      if (flag !== '-c' || line === undefined) return;
      shellExits.delete(line);
      shellExits.set(line, { code, signal });
      if (shellExits.size > 32) shellExits.delete(shellExits.keys().next().value!);
    });
  });
}

/** Node's exec error text; the command line has no newline (it is one line of an INI file). */
const COMMAND_FAILED = /^Command failed: ([^\n]*)\n?([\s\S]*)$/;

/** A failed credential_process run, as much of it as may be shown: never its arguments, never its output. */
export interface ProcessFailure {
  /** The program (argv[0] of the command line), without its arguments: those may be secrets. */
  readonly program: string;
  readonly exitCode?: number;
  readonly signal?: string;
  /** How much it wrote to stderr; the text itself is not kept (it may hold secrets, in no known shape). */
  readonly stderrBytes: number;
}

/** The credential_process failure in an SDK error text, if that is what it is. */
export function processFailure(text: string): ProcessFailure | undefined {
  const failed = COMMAND_FAILED.exec(text);
  if (!failed) return undefined;
  const line = failed[1]!;
  const exit = shellExits.get(line);
  return {
    program: firstShellWord(line),
    ...(typeof exit?.code === 'number' ? { exitCode: exit.code } : {}),
    ...(exit?.signal ? { signal: exit.signal } : {}),
    stderrBytes: Buffer.byteLength(failed[2]!),
  };
}

/** "exited 1", in the words clients and logs use. */
function outcome(failure: ProcessFailure): string {
  if (failure.signal) return `was killed by ${failure.signal}`;
  if (failure.exitCode === undefined) return 'failed';
  // What sh exits with when it cannot find or cannot run the program (POSIX "Command Search and Execution").
  const why = failure.exitCode === 127 ? ' (command not found)' : failure.exitCode === 126 ? ' (not executable)' : '';
  return `exited ${failure.exitCode}${why}`;
}

/**
 * The program a shell command line runs: its first word after any leading VAR=value assignments (which
 * may carry secrets too), with the shell's quotes and backslashes undone.
 */
export function firstShellWord(line: string): string {
  let at = 0;
  for (;;) {
    while (at < line.length && /\s/.test(line[at]!)) at++;
    let word = '';
    for (; at < line.length && !/\s/.test(line[at]!); at++) {
      const c = line[at]!;
      if (c === "'") {
        const end = line.indexOf("'", at + 1);
        word += line.slice(at + 1, end < 0 ? undefined : end);
        at = end < 0 ? line.length : end;
      } else if (c === '"') {
        for (at++; at < line.length && line[at] !== '"'; at++) word += line[at] === '\\' && at + 1 < line.length ? line[++at] : line[at];
      } else if (c === '\\' && at + 1 < line.length) {
        word += line[++at];
      } else {
        word += c;
      }
    }
    if (!/^[A-Za-z_]\w*=/.test(word)) return word;
  }
}

/** V8's JSON.parse errors quote the text around the fault: a piece of a credentials document or token file. */
const JSON_SNIPPET = /(?:Unexpected token '[^']*', )?(?:\.\.\.)?"[\s\S]*"(?:\.\.\.)? is not valid JSON/;
/** user:password@ in a URL (a container credentials URI, an endpoint). */
const URL_USERINFO = /(\/\/)[^/\s@]+@/g;

/**
 * An SDK error text made fit for clients and logs. Every text from a credential source passes here before
 * anyone sees it: the chain's reasons, the final error, the role's STS error. A failed credential_process
 * becomes its source's name and outcome ("credential_process of profile dev exited 1"): Node's text holds
 * the whole command line (an --api-key=... argument) and the program's stderr (a token printed on failure).
 */
export function safeReason(text: string, profile?: string): string {
  const failure = processFailure(text);
  if (failure) return `credential_process${profile ? ` of profile ${profile}` : ''} ${outcome(failure)}`;
  return redactSecrets(text.replace(JSON_SNIPPET, 'the text is not valid JSON').replace(URL_USERINFO, '$1[REDACTED]@'));
}

/**
 * Follows the SDK chain through its logger: which sources it tried, and each one's reason for passing.
 * The SDK writes these at debug level; the proxy keeps them for the error a client sees.
 */
export class ChainTrace {
  private attempts: SourceAttempt[] = [];
  /** The profile the step under way reads: the chain's own, or a role profile's source_profile. */
  private reading: string | undefined;

  /** `profile`: the one the chain was given (else AWS_PROFILE or "default", as the SDK picks it). */
  constructor(
    private readonly log?: Logger,
    private readonly profile?: string,
  ) {
    watchChildExits();
  }

  readonly logger = {
    trace: () => undefined,
    debug: (...args: unknown[]) => this.note(String(args[0])),
    info: () => undefined,
    warn: (...args: unknown[]) => this.log?.warn(safeReason(args.map(String).join(' '))),
    error: () => undefined,
  };

  reset(): void {
    this.attempts = [];
    this.reading = undefined;
  }

  tried(): readonly SourceAttempt[] {
    return this.attempts;
  }

  /** An SDK error text as a source's reason: safe to show, at most 300 characters. */
  reason(text: string): string {
    return safeReason(text, this.currentProfile()).slice(0, 300);
  }

  private currentProfile(): string {
    return this.reading ?? (this.profile || process.env.AWS_PROFILE || 'default');
  }

  private note(line: string): void {
    const step = CHAIN_STEPS.find(([marker]) => line.includes(marker));
    const last = this.attempts.at(-1);
    if (step) {
      this.reading = undefined;
      // The remote step names which remote source it chose in a second line: say that one.
      if (step[0].startsWith('remoteProvider::') && last?.source === REMOTE && last.reason === undefined) this.attempts.pop();
      this.attempts.push({ source: step[1] });
      return;
    }
    const base = SOURCE_PROFILE.exec(line);
    if (base) this.reading = base[1];
    const failure = PROVIDER_ERROR.exec(line);
    if (!failure || SETTING_LOOKUP.test(failure[1]!)) return;
    // The operator hears which program failed and how, each time it does; clients only the reason.
    const run = processFailure(failure[1]!);
    if (run) {
      const profile = this.currentProfile();
      this.log?.warn(
        {
          profile,
          program: run.program,
          ...(run.exitCode !== undefined ? { exitCode: run.exitCode } : {}),
          ...(run.signal ? { signal: run.signal } : {}),
          stderr: `[not logged, ${run.stderrBytes} bytes: it may hold secrets; run the program by hand to read it]`,
        },
        `credential_process of profile ${profile} ${outcome(run)}`,
      );
    }
    if (last && last.reason === undefined && !failure[1]!.startsWith(CHAIN_EXHAUSTED)) last.reason = this.reason(failure[1]!);
  }

  /** The chain failed with `text`: the last source tried, if it gave no reason, gets one. */
  failed(text: string): void {
    const last = this.attempts.at(-1);
    if (!last || last.reason !== undefined) return;
    last.reason = text.startsWith(CHAIN_EXHAUSTED) ? (REMOTE_SILENT[last.source] ?? 'no credentials there') : this.reason(text);
  }
}

/** The error an SDK source threw, fit to keep on `.cause` (logs print causes' messages and stacks). */
function safeCause(cause: unknown): unknown {
  if (typeof cause === 'string') return safeReason(cause);
  if (!(cause instanceof Error)) return cause;
  const message = safeReason(cause.message);
  if (message === cause.message) return cause;
  const copy = new Error(message);
  copy.name = cause.name;
  // The frames stay (where it failed); the first line held the unsafe message.
  const head = `${cause.name}: ${cause.message}`;
  copy.stack = `${cause.name}: ${message}${cause.stack?.startsWith(head) ? cause.stack.slice(head.length) : ''}`;
  return copy;
}

/** No credentials could be had: the message names the identity, `tried` every source and its reason. */
export class NoCredentialsError extends Error {
  constructor(
    readonly label: string,
    readonly tried: readonly SourceAttempt[],
    cause: unknown,
  ) {
    const said = safeReason((cause as Error)?.message ?? String(cause));
    // The chain's "Could not load credentials from any providers" names no cause: the sources' reasons do.
    super(`no AWS credentials for ${label}: ${said.startsWith(CHAIN_EXHAUSTED) && tried.length > 0 ? 'no source tried had any' : said}`, {
      cause: safeCause(cause),
    });
    this.name = 'NoCredentialsError';
  }

  /** "environment variables (why); the shared files (why); ..." for DETAIL lines. */
  describeTried(): string {
    return this.tried.map((a) => (a.reason ? `${a.source} (${a.reason})` : a.source)).join('; ');
  }
}

/** Asks a person for an MFA code; the SDK calls it with the device's serial or ARN. */
export type MfaPrompt = (serial: string) => Promise<string>;

export interface ProviderOptions {
  /** Region for STS (assume role); the instance's signing region. */
  readonly region: string;
  readonly mfa?: MfaPrompt | undefined;
  readonly log?: Logger | undefined;
}

export interface TracedProvider {
  readonly provider: AwsCredentialIdentityProvider;
  /** The base source of the last credentials fetched (for a role: what it was assumed from). */
  source(): string | undefined;
}

/** The SDK provider for an identity, wrapped so failures say what was tried and successes say from where. */
export function credentialProvider(spec: IdentitySpec, options: ProviderOptions): TracedProvider {
  const label = identityLabel(spec);
  const trace = new ChainTrace(options.log, spec.profile);
  let mfaUsed = false;
  const mfaCodeProvider: MfaPrompt = (serial) => {
    mfaUsed = true;
    return (options.mfa ?? noTerminal)(serial);
  };
  const withMfa = (source: string) => (mfaUsed ? `${source} with an MFA code` : source);
  const chain = lazily((sdk) =>
    sdk.fromNodeProviderChain({
      ...(spec.profile ? { profile: spec.profile } : {}),
      mfaCodeProvider,
      logger: trace.logger,
      // Read the shared config and credentials files again on every fetch (the SDK caches them for the
      // life of the process): the holder fetches rarely, and a fetch after invalidate() must see a key
      // rotated in the file since.
      ignoreCache: true,
    }),
  );
  let baseSource: string | undefined;
  const base: AwsCredentialIdentityProvider = async (props) => {
    trace.reset();
    try {
      const creds = await chain(props);
      // The chain's last step tried is the one that answered.
      baseSource = sourceOf(creds) ?? trace.tried().at(-1)?.source ?? 'static credentials';
      return creds;
    } catch (err) {
      // A step that stops the chain (an MFA code that cannot be asked) says why only in its error.
      trace.failed((err as Error).message ?? String(err));
      throw new NoCredentialsError(label, trace.tried(), err);
    }
  };
  if (!spec.roleArn) return { provider: base, source: () => baseSource && withMfa(baseSource) };
  const roleArn = spec.roleArn;
  const assume = lazily((sdk) =>
    sdk.fromTemporaryCredentials({
      masterCredentials: base,
      params: {
        RoleArn: roleArn,
        RoleSessionName: spec.roleSessionName ?? defaultRoleSessionName(),
        ...(spec.externalId ? { ExternalId: spec.externalId } : {}),
        ...(spec.mfaSerial ? { SerialNumber: spec.mfaSerial } : {}),
      },
      mfaCodeProvider,
      clientConfig: { region: options.region, maxAttempts: 2 },
    }),
  );
  const provider: AwsCredentialIdentityProvider = async (props) => {
    try {
      return await assume(props);
    } catch (err) {
      if (err instanceof NoCredentialsError) throw err;
      throw new NoCredentialsError(
        label,
        [{ source: `sts:AssumeRole ${spec.roleArn}`, reason: safeReason((err as Error).message ?? String(err)).slice(0, 300) }],
        err,
      );
    }
  };
  return { provider, source: () => (baseSource ? withMfa(`${spec.roleArn} assumed from ${baseSource}`) : undefined) };
}

const noTerminal: MfaPrompt = async (serial) => {
  throw new Error(
    `an MFA code is needed for ${serial}, but there is no terminal to ask on; run the proxy in a terminal, or use credentials that need no MFA code`,
  );
};

/** Who the credentials belong to (sts:GetCallerIdentity) and the server's clock (its HTTP Date). */
export interface CallerIdentity {
  readonly arn: string;
  readonly account: string;
  readonly serverDate: Date | undefined;
}

export async function callerIdentity(credentials: AwsCredentialIdentity, region: string, timeoutMs = 5_000): Promise<CallerIdentity> {
  const { GetCallerIdentityCommand, STSClient } = await import('@aws-sdk/client-sts');
  const client = new STSClient({ region, credentials, maxAttempts: 1 });
  let serverDate: Date | undefined;
  client.middlewareStack.add(
    (next) => async (args) => {
      const out = await next(args);
      const date = (out.response as { headers?: Record<string, string> }).headers?.date;
      if (date) serverDate = new Date(date);
      return out;
    },
    { step: 'deserialize', name: 'pgIamProxyServerDate' },
  );
  try {
    const out = await client.send(new GetCallerIdentityCommand({}), { abortSignal: AbortSignal.timeout(timeoutMs) });
    return { arn: out.Arn ?? 'unknown', account: out.Account ?? 'unknown', serverDate };
  } finally {
    client.destroy();
  }
}

/** An identity's credentials holder and token cache, shared by every instance that signs as it. */
export interface SignerIdentity {
  readonly spec: IdentitySpec;
  readonly label: string;
  /**
   * "#1", "#2"... in the order identities were first used (config order): how /readyz and /metrics name
   * it to whoever reaches the HTTP port, who need not learn the role ARN or profile (the log says which is which).
   */
  readonly ref: string;
  readonly holder: CredentialsHolder;
  readonly tokens: SharedTokens;
  /** Where the credentials in hand came from, once fetched. */
  source(): string | undefined;
}

export interface IdentitiesOptions {
  readonly log?: Logger | undefined;
  readonly mfa?: MfaPrompt | undefined;
  readonly holder?: Omit<CredentialsHolderOptions, 'log' | 'advice'>;
  readonly tokens?: SharedTokensOptions;
  /** Metrics: a fetch of an identity's credentials, named by its ref. */
  readonly onRefresh?: (ref: string) => void;
  /** The seam tests use to swap the SDK; the real chain by default. */
  readonly providerFor?: (spec: IdentitySpec, options: ProviderOptions) => TracedProvider;
  /** How a sleep is noticed (tests: a fake clock); with a log, the watch runs. */
  readonly wake?: WakeWatchOptions;
}

/** One holder per identity: a hundred instances on one profile still fetch its credentials once. */
export class Identities {
  private readonly byKey = new Map<string, SignerIdentity>();
  private readonly wake: WakeWatch | undefined;

  constructor(private readonly options: IdentitiesOptions = {}) {
    const log = options.log;
    // A long-running proxy (serve, run: they log) renews at once on waking from a sleep.
    if (log) {
      this.wake = new WakeWatch((slept) => {
        log.info(
          { sleptSeconds: Math.round(slept / 1000) },
          `woke up: this machine slept about ${Math.max(1, Math.round(slept / 60_000))} min (a timer fired that late): renewing AWS credentials now`,
        );
        for (const identity of this.byKey.values()) identity.holder.renew();
      }, options.wake);
    }
  }

  for(spec: IdentitySpec, region: string): SignerIdentity {
    const key = identityKey(spec);
    const known = this.byKey.get(key);
    if (known) return known;
    const label = identityLabel(spec);
    const ref = `#${this.byKey.size + 1}`;
    const log = this.options.log?.child({ identity: label });
    const traced = (this.options.providerFor ?? credentialProvider)(spec, { region, mfa: this.options.mfa, log });
    const holder = new CredentialsHolder(traced.provider, {
      ...this.options.holder,
      log,
      advice: () => renewalAdvice(traced.source() ?? '', spec),
      source: () => traced.source() ?? label,
      onRefresh: (creds) => {
        this.options.holder?.onRefresh?.(creds);
        this.options.onRefresh?.(ref);
      },
    });
    const identity: SignerIdentity = {
      spec,
      label,
      ref,
      holder,
      tokens: new SharedTokens(holder, { ...this.options.tokens, label }),
      source: traced.source,
    };
    this.byKey.set(key, identity);
    return identity;
  }

  all(): readonly SignerIdentity[] {
    return [...this.byKey.values()];
  }

  /** Stop every background refresh. */
  close(): void {
    this.wake?.close();
    for (const identity of this.byKey.values()) identity.holder.close();
  }
}

/** More than this between this machine's clock and AWS's, and tokens may be refused. */
export const CLOCK_SKEW_WARN_MS = 60_000;

/** The clock against STS's Date header (as doctor checks it): a warning past a minute. */
export function warnOfClockSkew(serverDate: Date | undefined, log: Logger, now = Date.now()): void {
  if (!serverDate) return;
  const skew = now - serverDate.getTime();
  if (Math.abs(skew) <= CLOCK_SKEW_WARN_MS) return;
  log.warn(
    { skewSeconds: Math.round(skew / 1000) },
    `this machine's clock is ${Math.round(Math.abs(skew) / 1000)} s ${skew > 0 ? 'ahead of' : 'behind'} AWS's: RDS may refuse tokens signed with it (fix the system clock: NTP)`,
  );
}

/**
 * An SSO profile whose session token cannot be refreshed: warn ten minutes before it ends, with the
 * command to run (at once when it is that close already). The timer never holds the process.
 */
export function watchSsoSession(profile: string | undefined, log: Logger, env: NodeJS.ProcessEnv = process.env, now = Date.now()): void {
  const session = ssoSession(profile, env);
  if (!session || session.refreshable) return;
  const end = session.end.getTime();
  const warn = () => {
    const left = Math.round((end - Date.now()) / 60_000);
    log.warn(
      { ssoSessionEnds: session.end.toISOString() },
      left > 0
        ? `the SSO session ends in ${left} min (${session.end.toISOString()}): run \`${session.command}\` before then, or renewals fail`
        : `the SSO session has ended (${session.end.toISOString()}): run \`${session.command}\``,
    );
  };
  const at = end - SSO_WARN_AHEAD_MS - now;
  // One warning timer per profile: announced again (a reload), the last reading of the cache stands.
  clearTimeout(ssoTimers.get(profile ?? ''));
  if (at <= 0) warn();
  else ssoTimers.set(profile ?? '', setTimeout(warn, timerDelay(at)).unref());
}
const ssoTimers = new Map<string, NodeJS.Timeout>();

/**
 * At start: fetch each identity's credentials and log who signs (the ARN when STS answers, else the
 * source) and until when, with a warning when renewal will need the user. Failures are logged, not
 * fatal: credentials may come later and clients are told until then.
 */
export async function announce(identity: SignerIdentity, region: string, log: Logger): Promise<boolean> {
  let creds: AwsCredentialIdentity;
  try {
    creds = await identity.holder.get();
  } catch (err) {
    const tried = err instanceof NoCredentialsError ? err.describeTried() : undefined;
    log.warn(
      { err, identity: identity.label, ...(tried ? { tried } : {}) },
      'no AWS credentials yet: clients are told so until they can be had',
    );
    return false;
  }
  const source = identity.source() ?? sourceOf(creds) ?? 'static credentials';
  const fields = {
    identity: identity.label,
    source,
    accessKeyId: creds.accessKeyId,
    ...(creds.expiration ? { expiration: creds.expiration.toISOString() } : {}),
  };
  try {
    const who = await callerIdentity(creds, region);
    log.info({ ...fields, arn: who.arn, account: who.account }, 'AWS identity ready');
    warnOfClockSkew(who.serverDate, log);
  } catch (err) {
    log.info(
      { ...fields, stsError: redactSecrets((err as Error).message) },
      'AWS credentials ready (sts:GetCallerIdentity did not answer)',
    );
  }
  if (source.includes('SSO')) watchSsoSession(identity.spec.profile, log);
  const advice = renewalAdvice(source, identity.spec);
  if (advice && creds.expiration) {
    log.warn(
      { identity: identity.label, expiration: creds.expiration.toISOString(), advice },
      `AWS credentials from ${source} need you to renew them: ${advice}`,
    );
  }
  return true;
}
