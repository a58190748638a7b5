// The SDK's default credential chain (fromNodeProviderChain), followed through its logger so that a
// failure can name every source tried and its reason.
import type { AwsCredentialIdentity, AwsIdentityProperties } from '@aws-sdk/types';
import type { Logger } from 'pino';
import {
  CHAIN_EXHAUSTED,
  messageOf,
  NoCredentialsError,
  processFailure,
  processOutcome,
  type SourceAttempt,
  safeReason,
  sourceReason,
  watchChildExits,
} from './reasons.js';
import { sourceOf } from './source-names.js';

type CredentialProviders = typeof import('@aws-sdk/credential-providers');
let providers: Promise<CredentialProviders> | undefined;

/** The SDK's credential providers load on first use: start-up to listening stays short. */
export const credentialProviders = (): Promise<CredentialProviders> => (providers ??= import('@aws-sdk/credential-providers'));

/** What the SDK's default chain is given (its DefaultProviderInit). */
export type ChainInit = NonNullable<Parameters<CredentialProviders['fromNodeProviderChain']>[0]>;

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
/** Why a remote source that said nothing failed (the SDK keeps its error to itself). */
const REMOTE_SILENT: Record<string, string> = {
  'EC2 instance metadata (IMDSv2)':
    'no credentials from the instance metadata service: not an EC2 instance, no instance role attached, or IMDS unreachable; AWS_EC2_METADATA_DISABLED=true skips it',
  'the ECS/EKS container endpoint': 'no credentials from the container credentials endpoint: it did not answer',
};
/** A role profile's base: the SDK names the profile it turns to next. */
const SOURCE_PROFILE = /finding credential resolver using source_profile=\[([^\]]*)\]/;

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
    return sourceReason(text, this.currentProfile());
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
        `credential_process of profile ${profile} ${processOutcome(run)}`,
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

/** The default chain for `init`; a failure is a NoCredentialsError naming every source tried and its reason. */
export function defaultChain(init: ChainInit, options: ChainOptions): (props?: AwsIdentityProperties) => Promise<ChainCredentials> {
  const trace = new ChainTrace(options.log, init.profile);
  let chain: ReturnType<CredentialProviders['fromNodeProviderChain']> | undefined;
  return async (props) => {
    trace.reset();
    try {
      chain ??= (await credentialProviders()).fromNodeProviderChain({ ...init, logger: trace.logger });
      const credentials = await chain(props);
      // The chain's last step tried is the one that answered.
      return { credentials, source: sourceOf(credentials) ?? trace.tried().at(-1)?.source ?? 'static credentials' };
    } catch (err) {
      // A step that stops the chain (an MFA code that cannot be asked) says why only in its error.
      trace.failed(messageOf(err));
      throw new NoCredentialsError(options.label, trace.tried(), err);
    }
  };
}
