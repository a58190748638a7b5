// Logs for a person at a terminal: one line per event, `HH:MM:SS LEVEL message key=value`, with
// the few fields that matter for that message. pino still serializes and redacts each line; this reads
// its JSON, so what a terminal shows is never more than the JSON holds. Stack traces of expected
// conditions (no credentials, a refused login) stay in JSON and at --log-level debug, and a warning that
// repeats is printed once, then summarised.

/** A line as pino wrote it. */
type Entry = Record<string, unknown> & {
  level: number;
  time: number;
  msg?: string;
  err?: { message?: string; stack?: string };
};

export interface TerminalOptions {
  /** The logger's level: stack traces are printed at debug and trace only. */
  readonly level: string;
  /** Colour the level word (stderr is a terminal). */
  readonly color: boolean;
  /** Where the lines go; stderr by default. */
  readonly out?: { write(text: string): unknown };
}

const LEVELS: Record<number, readonly [name: string, color: string]> = {
  10: ['TRACE', '\x1b[2m'],
  20: ['DEBUG', '\x1b[2m'],
  30: ['INFO ', '\x1b[32m'],
  40: ['WARN ', '\x1b[33m'],
  50: ['ERROR', '\x1b[31m'],
  60: ['FATAL', '\x1b[31;1m'],
};

/** A warning printed in full is not printed again in full for this long... */
const REPEAT_WINDOW_MS = 10 * 60_000;
/** ...and its repeats are summarised at most this often. */
const SUMMARY_EVERY_MS = 60_000;
/** Distinct warnings remembered at once: a flood of different ones must not grow memory. */
const REPEATS_KEPT = 100;

const pad = (n: number) => String(n).padStart(2, '0');
function clock(ms: number): string {
  const at = new Date(ms);
  return `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
}

const text = (value: unknown) => (typeof value === 'string' || typeof value === 'number' ? String(value) : undefined);
const startup = (e: Entry) => (e.startup ?? {}) as Record<string, unknown>;
const milliseconds = (value: unknown) => (typeof value === 'number' ? `${value}ms` : undefined);
/** An access key id is not a secret, but its middle says nothing to a person: AKIA…XYZ. */
const shortKey = (value: unknown) => (typeof value === 'string' ? `${value.slice(0, 4)}…${value.slice(-3)}` : undefined);

/** Each field a person may need, under the name they read it by. */
const FIELDS: Record<string, (e: Entry) => string | undefined> = {
  user: (e) => text(startup(e).user ?? e.user),
  db: (e) => text(startup(e).database ?? e.database),
  from: (e) => text(e.client),
  ready: (e) => milliseconds(e.readyMs),
  duration: (e) =>
    typeof e.durationMs === 'number' && e.durationMs >= 1000 ? `${(e.durationMs / 1000).toFixed(1)}s` : milliseconds(e.durationMs),
  'signed-by': (e) => shortKey(e.accessKeyId),
  key: (e) => shortKey(e.accessKeyId),
  listen: (e) => text(e.listen),
  'unix-socket': (e) => text(e.unixSocket),
  http: (e) => text(e.http),
  endpoint: (e) => text(e.instance),
  // Said only when the connection goes elsewhere than the endpoint (a tunnel).
  'connect-to': (e) => (e.connectTo !== e.instance ? text(e.connectTo) : undefined),
  'pool-mode': (e) => text(e.poolMode),
  'pool-size': (e) => text(e.poolSize),
  'max-server-connections': (e) => text(e.maxServerConnections),
  arn: (e) => text(e.arn),
  source: (e) => text(e.source),
  expires: (e) => text(e.expiration),
  reason: (e) => text(e.reason),
  failure: (e) => text(e.failure),
  program: (e) => text(e.program),
  warning: (e) => text((e.warning as { message?: unknown } | undefined)?.message),
  tried: (e) => text(e.tried),
  advice: (e) => text(e.advice),
  signal: (e) => text(e.signal),
  'next-try': (e) => (typeof e.retryInSeconds === 'number' ? `${e.retryInSeconds}s` : undefined),
};

const SESSION_OPENED = ['user', 'db', 'from', 'ready', 'signed-by'];
/** Which fields matter, by the start of the message; the others get the general list. */
const CHOICES: ReadonlyArray<readonly [start: string, fields: readonly string[]]> = [
  ['session opened', SESSION_OPENED],
  ['server ended the session at startup', [...SESSION_OPENED, 'reason']],
  ['session closed', ['user', 'db', 'from', 'duration', 'reason', 'failure']],
  ['session failed', ['user', 'db', 'from', 'duration', 'reason', 'failure']],
  ['listening', ['listen', 'unix-socket', 'endpoint', 'connect-to', 'pool-mode', 'pool-size', 'max-server-connections']],
];
const GENERAL = [
  'user',
  'db',
  'from',
  'listen',
  'unix-socket',
  'http',
  'arn',
  'source',
  'key',
  'expires',
  'reason',
  'failure',
  'program',
  'warning',
  'tried',
  'advice',
  'signal',
  'next-try',
];

/** A value as key=value shows it: quoted when it has spaces, quotes, an equals sign or control characters. */
const shown = (value: string) => (value === '' || /[\s"=\p{Cc}]/u.test(value) ? JSON.stringify(value) : value);
/**
 * Text with its control characters as escapes: what clients send (a user name, a database name) reaches
 * messages, and an escape sequence in it must not drive the operator's terminal; a newline must not
 * start what looks like another event.
 */
const printable = (text: string) => text.replace(/\p{Cc}/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** How often one warning came since it was printed in full, and when it was last printed. */
interface Repeat {
  readonly first: number;
  printed: number;
  count: number;
}

/** A pino destination that prints each line for people (see the top of this file). */
export function terminalStream(options: TerminalOptions): { write(line: string): void } {
  const out = options.out ?? process.stderr;
  const stacks = options.level === 'debug' || options.level === 'trace';
  // By when they were printed in full, oldest first (a warning printed again is moved to the end).
  const repeats = new Map<string, Repeat>();
  const levelWord = (level: number) => {
    const [name, color] = LEVELS[level] ?? [String(level), ''];
    return options.color && color ? `${color}${name}\x1b[0m` : name;
  };

  /** True when a warning seen lately is to be held back; prints the summary when one is due. */
  const repeated = (entry: Entry, msg: string): boolean => {
    // The reason tells session failures apart: one message, many causes.
    const key = `${msg}\n${entry.err?.message ?? ''}\n${text(entry.reason) ?? ''}`;
    const seen = repeats.get(key);
    if (seen && entry.time - seen.first < REPEAT_WINDOW_MS) {
      seen.count++;
      if (entry.time - seen.printed < SUMMARY_EVERY_MS) return true;
      seen.printed = entry.time;
      const next = typeof entry.retryInSeconds === 'number' ? `; next try in ${entry.retryInSeconds} s` : '';
      out.write(`${clock(entry.time)} ${levelWord(entry.level)} still ${msg} (${seen.count} times since ${clock(seen.first)})${next}\n`);
      return true;
    }
    repeats.delete(key);
    for (const [old, { first }] of repeats) {
      if (entry.time - first < REPEAT_WINDOW_MS && repeats.size < REPEATS_KEPT) break;
      repeats.delete(old);
    }
    repeats.set(key, { first: entry.time, printed: entry.time, count: 1 });
    return false;
  };

  return {
    write(line: string) {
      let entry: Entry;
      try {
        entry = JSON.parse(line) as Entry;
      } catch {
        out.write(line);
        return;
      }
      const msg = printable(entry.msg ?? '');
      if (entry.level >= 40 && repeated(entry, msg)) return;
      const fields = CHOICES.find(([start]) => msg.startsWith(start))?.[1] ?? GENERAL;
      let said = msg;
      // The error's message (already redacted by the err serializer), unless the message quotes it.
      const why = entry.err?.message && printable(entry.err.message);
      if (why && !msg.includes(why)) said = said ? `${said}: ${why}` : why;
      for (const name of fields) {
        const value = FIELDS[name]!(entry);
        if (value !== undefined) said += ` ${name}=${shown(value)}`;
      }
      const stack =
        stacks && entry.err?.stack
          ? entry.err.stack
              .split('\n')
              .map((frame) => `\n  ${printable(frame)}`)
              .join('')
          : '';
      out.write(`${clock(entry.time)} ${levelWord(entry.level)} ${said}${stack}\n`);
    },
  };
}
