import pino, { type Logger } from 'pino';

export type LogFormat = 'json' | 'pretty';
export interface LogOptions {
  readonly level: string;
  readonly format: LogFormat;
}

/** Query parameters of a presigned URL that make it a credential (PROTOCOL.md D7). */
const SECRET_QUERY = /(X-Amz-(?:Signature|Security-Token|Credential)=)[^&\s"']*/gi;

/** Blank the credential parts of any text that might hold a token (error messages from SDKs, URLs). */
export const redactSecrets = (text: string): string => text.replace(SECRET_QUERY, '$1[REDACTED]');

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

function errSerializer(err: unknown): unknown {
  const out = pino.stdSerializers.err(err as Error) as unknown as Record<string, unknown>;
  for (const key of ['message', 'stack'] as const) {
    if (typeof out[key] === 'string') out[key] = redactSecrets(out[key] as string);
  }
  return out;
}

/** The one root logger; sessions take children of it. */
export function createLogger(options: LogOptions, destination?: pino.DestinationStream): Logger {
  const base: pino.LoggerOptions = {
    name: 'pg-iam-proxy',
    level: options.level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    serializers: { err: errSerializer },
  };
  if (destination) return pino(base, destination);
  if (options.format === 'pretty') {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino(base, pino.destination({ dest: 2, sync: false }));
}
