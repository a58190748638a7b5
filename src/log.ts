import { createHash } from 'node:crypto';
import pino, { type Logger } from 'pino';
import { terminalStream } from './log-terminal.js';

export type LogFormat = 'json' | 'pretty';
export interface LogOptions {
  readonly level: string;
  readonly format: LogFormat;
}

/** Query parameters of a presigned URL that make it a credential (docs/protocol.md D7). */
const SECRET_QUERY = /(X-Amz-(?:Signature|Security-Token|Credential)=)[^&\s"']*/gi;

/**
 * OAuth access tokens in text: a JWT (Entra ID's, any other), Google's `ya29.` tokens, whatever follows
 * "Bearer " (an SDK's error quoting a request).
 */
const BEARER = /\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*|\bya29\.[\w.-]+|(?<=\bBearer\s+)[^\s"',]+/g;

/**
 * OAuth's other secrets as SDK errors quote a request or a response: form fields and JSON members
 * (client_secret, refresh_token, a client assertion, an access token) and the managed identity header.
 */
const OAUTH_FIELD =
  /((?:client_secret|refresh_token|client_assertion|assertion|access_token|id_token)(?:=|"\s*:\s*")|x-identity-header["']?\s*[:=]\s*["']?)[^&\s"',]+/gi;

/** A URL's password (`scheme://user:password@host`), as a user may give one in an endpoint option. */
const URL_PASSWORD = /(\/\/[^/\s@:]+:)[^/\s@]+@/g;

/** Blank the credential parts of any text that might hold a token (error messages from SDKs, URLs). */
export const redactSecrets = (text: string): string =>
  text
    .replace(SECRET_QUERY, '$1[REDACTED]')
    .replace(OAUTH_FIELD, '$1[REDACTED]')
    .replace(BEARER, '[REDACTED]')
    .replace(URL_PASSWORD, '$1[REDACTED]@');

/** Paths that could hold a secret if someone ever logged the wrong object. */
const REDACT_PATHS = [
  'token',
  'password',
  'secretAccessKey',
  'sessionToken',
  '*.token',
  '*.password',
  '*.secretAccessKey',
  '*.sessionToken',
  '*.value',
];

/**
 * What an SDK's error carries besides its words: the request it made (headers with a bearer token:
 * gaxios' `config`), the response, the raw request. pino copies an error's own fields as they are.
 */
const REQUEST_FIELDS = ['config', 'request', 'response', 'headers'];

/** A serialized error with its secrets blanked: its words, and those of the errors it aggregates. */
function scrubbed(out: Record<string, unknown>): Record<string, unknown> {
  for (const key of REQUEST_FIELDS) delete out[key];
  for (const key of ['message', 'stack'] as const) {
    if (typeof out[key] === 'string') out[key] = redactSecrets(out[key] as string);
  }
  // Azure's AggregateAuthenticationError: one error per credential of the chain.
  if (Array.isArray(out.aggregateErrors))
    out.aggregateErrors = out.aggregateErrors.map((e: unknown) =>
      e !== null && typeof e === 'object' ? scrubbed(e as Record<string, unknown>) : e,
    );
  return out;
}

/**
 * An error's message and its causes' (as pino joins them), but a cause whose words the message already
 * holds is not said again ("no AWS credentials for …: X: X").
 */
function withCauses(err: Error): string {
  let text = err.message;
  const seen = new Set<unknown>([err]);
  for (let cause = err.cause; cause instanceof Error && !seen.has(cause); cause = cause.cause) {
    seen.add(cause);
    if (cause.message && !text.includes(cause.message)) text += `: ${cause.message}`;
  }
  return text;
}

/** Stacks remembered as already logged; beyond this many, the oldest is forgotten (and logged again). */
const STACKS_KEPT = 100;

/**
 * The err serializer of one logger: pino's, with secrets blanked. A stack is logged once: an error that
 * recurs (a credentials fetch failing at every retry) carries `stackSeen: true` instead of the same
 * frames again.
 */
function errSerializer(): (err: unknown) => unknown {
  const seen = new Set<string>();
  return (err) => {
    const out = pino.stdSerializers.err(err as Error) as unknown as Record<string, unknown>;
    if (err instanceof Error) out.message = withCauses(err);
    scrubbed(out);
    if (typeof out.stack !== 'string') return out;
    const hash = createHash('sha256').update(`${out.message}\n${out.stack}`).digest('base64');
    if (seen.has(hash)) {
      out.stack = undefined;
      out.stackSeen = true;
      return out;
    }
    seen.add(hash);
    if (seen.size > STACKS_KEPT) seen.delete(seen.values().next().value!);
    return out;
  };
}

/** The one root logger; sessions take children of it. */
export function createLogger(options: LogOptions, destination?: pino.DestinationStream): Logger {
  const base: pino.LoggerOptions = {
    name: 'pg-iam-proxy',
    level: options.level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    serializers: { err: errSerializer() },
  };
  if (destination) return pino(base, destination);
  // A terminal or pipe that went away (EPIPE) loses the lines, not the process: Node would throw the error.
  if (!process.stderr.listeners('error').includes(ignore)) process.stderr.on('error', ignore);
  // Either format, each line is one write on stderr as Node opens it. A pipe or a socket (a container's
  // log, journald) is non-blocking: what a slow reader has not taken waits in memory, and the proxy never
  // stalls on it. A file is written in place, a terminal as Node writes to one. No thread hand-off:
  // pino's asynchronous file destination costs a thread-pool round trip per line (about 100 µs of CPU a
  // line measured, two lines a session; docs/performance.md).
  const log =
    options.format === 'pretty'
      ? // For people: formatted in this thread from pino's JSON, one line per event (log-terminal.ts).
        pino(base, terminalStream({ level: options.level, color: process.stderr.isTTY === true }))
      : pino(base, process.stderr);
  toStderr.add(log);
  return log;
}

const ignore = () => undefined;

/** The loggers createLogger made, writing to process.stderr. */
const toStderr = new WeakSet<Logger>();

/**
 * The log's last lines before the process exits: what stderr has queued is written for at most
 * `withinMs`, then left. With stderr a pipe whose reader has gone (`2>&1 | tee`, tee ended by the same
 * Ctrl-C) the write fails (EPIPE) and the lines are lost; a reader that stopped reading holds them until
 * the time is up. Whatever stderr is connected to, the process exits.
 */
export async function finishLog(log: Logger, withinMs = 1_000): Promise<void> {
  if (!toStderr.has(log)) return new Promise<void>((resolve) => log.flush(() => resolve()));
  const stderr = process.stderr;
  if (stderr.writableLength === 0 || stderr.destroyed) return;
  let timer: NodeJS.Timeout | undefined;
  // Called once everything before it is written, or at once with an error (stderr broken, destroyed).
  await new Promise<void>((resolve) => {
    timer = setTimeout(resolve, withinMs);
    stderr.write('', () => resolve());
  });
  clearTimeout(timer);
}
