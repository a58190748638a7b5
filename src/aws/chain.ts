// The SDK's default credential chain (defaultProvider in @aws-sdk/credential-provider-node, which
// fromNodeProviderChain wraps), built again from the single providers of @aws-sdk/credential-providers: the
// same order, the same conditions, each provider given the chain's settings as the SDK gives them, so that
// the proxy knows every source it tried and why each gave nothing. In the SDK's order:
//   1. environment variables (AWS_ACCESS_KEY_ID), unless a profile is named (--profile or AWS_PROFILE);
//   2. SSO settings, only when the chain is given some (an SSO profile is read by the next step);
//   3. the shared config and credentials files: the profile's static keys, role, SSO session,
//      credential_process, web identity token or `aws login` session;
//   4. the profile's credential_process;
//   5. a web identity token file (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN: EKS IRSA);
//   6. when AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI is set, the container endpoint (fromHttp,
//      then fromContainerMetadata); else EC2 instance metadata, unless AWS_EC2_METADATA_DISABLED.
// A source whose error has tryNextLink passes to the next one; any other error ends the chain, as in the SDK.
import type { AwsCredentialIdentity, AwsIdentityProperties } from '@aws-sdk/types';
import type { Logger } from 'pino';
import { processProfile, profileName } from './profiles.js';
import {
  CHAIN_EXHAUSTED,
  failedCommand,
  messageOf,
  NoCredentialsError,
  processFailure,
  processOutcome,
  REASON_MAX_CHARS,
  type SourceAttempt,
  safeReason,
  sourceReason,
} from './reasons.js';
import { ShellRuns } from './shell-runs.js';
import { sourceOf } from './source-names.js';

type CredentialProviders = typeof import('@aws-sdk/credential-providers');
let providers: Promise<CredentialProviders> | undefined;

/** The SDK's credential providers load on first use: start-up to listening stays short. */
export const credentialProviders = (): Promise<CredentialProviders> => (providers ??= import('@aws-sdk/credential-providers'));

/** What the SDK's default chain is given (its DefaultProviderInit); every source is given the same. */
export type ChainInit = NonNullable<Parameters<CredentialProviders['fromNodeProviderChain']>[0]>;

/** The sources of the chain as people read them in "Sources tried". */
export const CHAIN_SOURCES = {
  env: 'environment variables',
  sso: 'SSO settings',
  ini: 'the shared config and credentials files',
  process: 'credential_process',
  tokenFile: 'a web identity token file',
  container: 'the ECS/EKS container endpoint',
  containerMetadata: 'the container endpoint, as the older container provider reads it',
  imds: 'EC2 instance metadata (IMDSv2)',
} as const;

/** Why instance metadata gave nothing, for people: the SDK's own text ("Unable to connect ...") says little. */
const IMDS_NOTHING =
  'no credentials from the instance metadata service: not an EC2 instance, no instance role attached, or IMDS unreachable';

/** The settings that make the SDK's chain ask SSO itself (its step 2); without one, that step passes. */
const SSO_SETTINGS = ['ssoStartUrl', 'ssoAccountId', 'ssoRegion', 'ssoRoleName', 'ssoSession'] as const;

/** A source the chain passes over on the SDK's own conditions: a CredentialsProviderError with tryNextLink, as the SDK throws. */
class PassedOver extends Error {
  override readonly name = 'CredentialsProviderError';
  readonly tryNextLink = true;
}

/** The chain's last link, when every source passed: the SDK's own words, and no next link. */
class ChainExhausted extends Error {
  override readonly name = 'CredentialsProviderError';
  readonly tryNextLink = false;

  constructor() {
    super(CHAIN_EXHAUSTED);
  }
}

/** Whether the chain goes on after `err`, as the SDK's chain decides it. */
const tryNext = (err: unknown): boolean => Boolean((err as { tryNextLink?: unknown } | null | undefined)?.tryNextLink);

/** One source of the chain: its name for people, and how it is asked. */
interface Step {
  readonly source: string;
  readonly fetch: () => Promise<AwsCredentialIdentity>;
  /** For a source that may run a credential_process: the profile a failed command line belongs to. */
  readonly processProfile?: (commandLine: string) => string;
  /** The reason from the SDK's text (made safe), for a source whose text says too little on its own. */
  readonly reason?: (said: string) => string;
}

export interface ChainOptions {
  /** The identity in people's words, for the error. */
  readonly label: string;
  /** Where the SDK's warnings go, and a failed credential_process is told by program and exit status. */
  readonly log?: Logger | undefined;
}

/** Credentials, and where they came from in people's words. */
export interface ChainCredentials {
  readonly credentials: AwsCredentialIdentity;
  readonly source: string;
}

const ignore = (): undefined => undefined;

/**
 * The default chain for `init`. Each call runs it from the first source (no memo: the holder holds); a
 * failure is a NoCredentialsError naming every source tried and its reason.
 */
export function defaultChain(init: ChainInit, options: ChainOptions): (props?: AwsIdentityProperties) => Promise<ChainCredentials> {
  const log = options.log;
  // The providers warn through the logger they are given (else on the console, which would break JSON logs).
  const sdkLogger = {
    trace: ignore,
    debug: ignore,
    info: ignore,
    warn: (...args: unknown[]) => log?.warn(safeReason(args.map(String).join(' '))),
    error: ignore,
  };
  const given: ChainInit = { ...init, logger: sdkLogger };
  let warnedBoth = false;
  const bothSet = (profile: string) => {
    if (warnedBoth) return;
    warnedBoth = true;
    log?.warn(
      { profile },
      'a profile (--profile or AWS_PROFILE) and AWS_ACCESS_KEY_ID with AWS_SECRET_ACCESS_KEY are both set: the profile is used, the environment keys are not',
    );
  };
  return async (props) => {
    const sdk = await credentialProviders();
    const tried: SourceAttempt[] = [];
    for (const step of chainSteps(sdk, given, props, bothSet)) {
      const runs = step.processProfile ? new ShellRuns() : undefined;
      try {
        const credentials = await (runs ? runs.watch(step.fetch) : step.fetch());
        return { credentials, source: sourceOf(credentials) ?? step.source };
      } catch (err) {
        tried.push({ source: step.source, reason: reasonFor(step, err, runs, log) });
        if (!tryNext(err)) throw new NoCredentialsError(options.label, tried, err);
      }
    }
    throw new NoCredentialsError(options.label, tried, new ChainExhausted());
  };
}

/** The SDK's sources in its order; the remote ones are chosen when the chain reaches them, as the SDK chooses. */
function* chainSteps(
  sdk: CredentialProviders,
  init: ChainInit,
  props: AwsIdentityProperties | undefined,
  bothSet: (profile: string) => void,
): Generator<Step> {
  // The profile the SDK's file and process providers read: the chain's, else the caller's, else AWS_PROFILE.
  const profile = () => profileName(init.profile ?? (props?.callerClientConfig as { profile?: string } | undefined)?.profile);
  yield {
    source: CHAIN_SOURCES.env,
    fetch: async () => {
      const named = init.profile ?? process.env.AWS_PROFILE;
      if (named) {
        if (process.env.AWS_ACCESS_KEY_ID && process.env.AWS_SECRET_ACCESS_KEY) bothSet(named);
        throw new PassedOver(`skipped: a profile is named (${named}), and a named profile comes before environment keys`);
      }
      return sdk.fromEnv(init)();
    },
  };
  yield {
    source: CHAIN_SOURCES.sso,
    fetch: async () => {
      if (!SSO_SETTINGS.some((setting) => init[setting])) {
        throw new PassedOver('skipped: the chain is given no SSO settings; an SSO profile is read with the shared files, next');
      }
      return sdk.fromSSO(init)(props);
    },
  };
  yield {
    source: CHAIN_SOURCES.ini,
    // A role profile reaches the credential_process of its source_profile: name the one that ran it.
    processProfile: (commandLine) => processProfile(commandLine, profile()),
    fetch: () => sdk.fromIni(init)(props),
  };
  yield { source: CHAIN_SOURCES.process, processProfile: profile, fetch: () => sdk.fromProcess(init)(props) };
  yield { source: CHAIN_SOURCES.tokenFile, fetch: () => sdk.fromTokenFile(init)(props) };
  yield* remoteSteps(sdk, init);
}

/** The SDK's remote step: the container endpoint when one is set, else instance metadata (never both). */
function* remoteSteps(sdk: CredentialProviders, init: ChainInit): Generator<Step> {
  const env = process.env;
  if (env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI || env.AWS_CONTAINER_CREDENTIALS_FULL_URI) {
    yield { source: CHAIN_SOURCES.container, fetch: () => sdk.fromHttp(init)() };
    yield { source: CHAIN_SOURCES.containerMetadata, fetch: () => sdk.fromContainerMetadata(init)() };
    return;
  }
  yield {
    source: CHAIN_SOURCES.container,
    fetch: async () => {
      throw new PassedOver('skipped: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set');
    },
  };
  yield {
    source: CHAIN_SOURCES.imds,
    reason: (said) => `${IMDS_NOTHING} (${said}); AWS_EC2_METADATA_DISABLED=true skips it`,
    fetch: async () => {
      const disabled = env.AWS_EC2_METADATA_DISABLED;
      if (disabled && disabled !== 'false') throw new PassedOver('skipped: AWS_EC2_METADATA_DISABLED is set');
      return sdk.fromInstanceMetadata(init)();
    },
  };
}

/**
 * Why a source gave nothing, safe to show. A failed credential_process is named by its profile and how
 * it ended; the operator hears its program too, each time it fails (clients hear only the reason).
 */
function reasonFor(step: Step, err: unknown, runs: ShellRuns | undefined, log: Logger | undefined): string {
  const text = messageOf(err);
  const commandLine = step.processProfile && failedCommand(text);
  if (commandLine !== undefined && step.processProfile) {
    const profile = step.processProfile(commandLine);
    const run = processFailure(text, runs)!;
    log?.warn(
      {
        profile,
        program: run.program,
        ...(run.exitCode !== undefined ? { exitCode: run.exitCode } : {}),
        ...(run.signal ? { signal: run.signal } : {}),
        stderr: `[not logged, ${run.stderrBytes} bytes: it may hold secrets; run the program by hand to read it]`,
      },
      `credential_process of profile ${profile} ${processOutcome(run)}`,
    );
    return sourceReason(text, profile, runs);
  }
  const said = safeReason(text);
  return (err instanceof PassedOver || !step.reason ? said : step.reason(said)).slice(0, REASON_MAX_CHARS);
}
