// Why there are no AWS credentials, in words fit for clients and logs: each source tried and its reason,
// the SDK's error texts made safe (a failed credential_process said by program and exit status, never its
// arguments or output; JSON pieces and URL passwords cut out), and the error that carries them.
import { redactSecrets } from '../log.js';
import type { ShellExit } from './shell-runs.js';

/** One source of a credential chain and why it gave nothing. */
export interface SourceAttempt {
  readonly source: string;
  readonly reason?: string;
}

/**
 * One source's reason is cut to this many characters: the list of sources goes into one DETAIL line, and
 * a long SDK text (a document it could not parse, a multi-line hint) must not bury the other sources.
 */
export const REASON_MAX_CHARS = 300;

/** The chain's own last words (the SDK's, kept): no source had credentials. Each source's reason says why, not this. */
export const CHAIN_EXHAUSTED = 'Could not load credentials from any providers';

/** Node's exec error text; the command line has no newline (it is one line of an INI file). */
const COMMAND_FAILED = /^Command failed: ([^\n]*)\n?([\s\S]*)$/;

/** The command line of a failed shell command in an SDK error text (Node's exec error), if that is what it is. */
export function failedCommand(text: string): string | undefined {
  return COMMAND_FAILED.exec(text)?.[1];
}

/** A failed credential_process run, as much of it as may be shown: never its arguments, never its output. */
export interface ProcessFailure {
  /** The program (argv[0] of the command line), without its arguments: those may be secrets. */
  readonly program: string;
  readonly exitCode?: number;
  readonly signal?: string;
  /** How much it wrote to stderr; the text itself is not kept (it may hold secrets, in no known shape). */
  readonly stderrBytes: number;
}

/** How the shell commands ended, by command line (src/aws/shell-runs.ts). */
export interface ShellExits {
  exit(commandLine: string): ShellExit | undefined;
}

/** The credential_process failure in an SDK error text, if that is what it is; `runs` may say how it ended. */
export function processFailure(text: string, runs?: ShellExits): ProcessFailure | undefined {
  const failed = COMMAND_FAILED.exec(text);
  if (!failed) return undefined;
  const line = failed[1]!;
  const exit = runs?.exit(line);
  return {
    program: firstShellWord(line),
    ...(typeof exit?.code === 'number' ? { exitCode: exit.code } : {}),
    ...(exit?.signal ? { signal: exit.signal } : {}),
    stderrBytes: Buffer.byteLength(failed[2]!),
  };
}

/** "exited 1", in the words clients and logs use. */
export function processOutcome(failure: ProcessFailure): string {
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
export function safeReason(text: string, profile?: string, runs?: ShellExits): string {
  const failure = processFailure(text, runs);
  if (failure) return `credential_process${profile ? ` of profile ${profile}` : ''} ${processOutcome(failure)}`;
  return redactSecrets(text.replace(JSON_SNIPPET, 'the text is not valid JSON').replace(URL_USERINFO, '$1[REDACTED]@'));
}

/** An SDK error text as one source's reason: safe to show, at most REASON_MAX_CHARS. */
export function sourceReason(text: string, profile?: string, runs?: ShellExits): string {
  return safeReason(text, profile, runs).slice(0, REASON_MAX_CHARS);
}

/** An error's message, or what was thrown, as text. */
export const messageOf = (err: unknown): string => (err as Error)?.message ?? String(err);

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
    const said = safeReason(messageOf(cause));
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
