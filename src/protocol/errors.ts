import { BackendCode, CODE_SIZE, LENGTH_SIZE, type SqlState } from './constants.js';

/** Fields of an ErrorResponse, by their one-letter field type ("Error and Notice Message Fields"). */
export interface ErrorFields {
  severity: string; // S and V
  code: string; // C
  message: string; // M
  detail?: string | undefined; // D
  hint?: string | undefined; // H
}

/** Serialize an ErrorResponse ('E'). Severity goes out both localized (S) and not (V), as servers do. */
export function errorResponse(fields: ErrorFields): Buffer {
  const parts: Array<[string, string]> = [
    ['S', fields.severity],
    ['V', fields.severity],
    ['C', fields.code],
    ['M', fields.message],
  ];
  if (fields.detail) parts.push(['D', fields.detail]);
  if (fields.hint) parts.push(['H', fields.hint]);
  let size = CODE_SIZE + LENGTH_SIZE + 1; // trailing NUL ends the field list
  const encoded = parts.map(([type, value]) => {
    const bytes = Buffer.from(value, 'utf8');
    size += 1 + bytes.length + 1;
    return [type, bytes] as const;
  });
  const out = Buffer.allocUnsafe(size);
  out[0] = BackendCode.ErrorResponse;
  out.writeInt32BE(size - CODE_SIZE, CODE_SIZE);
  let at = CODE_SIZE + LENGTH_SIZE;
  for (const [type, bytes] of encoded) {
    out[at++] = type.charCodeAt(0);
    at += bytes.copy(out, at);
    out[at++] = 0;
  }
  out[at] = 0;
  return out;
}

export interface WireErrorOptions {
  detail?: string | undefined;
  hint?: string | undefined;
  /** Short machine label for logs and the auth_failures metric (e.g. "tls_untrusted"). */
  reason: string;
  cause?: unknown;
  /** Close without writing: the peer did not speak the protocol, so an ErrorResponse means nothing. */
  silent?: boolean;
}

/**
 * A failure the client hears about as FATAL ErrorResponse, then a close. Thrown anywhere in a session's
 * startup; caught and written in exactly one place (the session).
 */
export class WireError extends Error {
  readonly code: SqlState | string;
  readonly detail: string | undefined;
  readonly hint: string | undefined;
  readonly reason: string;
  readonly silent: boolean;

  constructor(code: SqlState | string, message: string, options: WireErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WireError';
    this.code = code;
    this.detail = options.detail;
    this.hint = options.hint;
    this.reason = options.reason;
    this.silent = options.silent ?? false;
  }

  toBuffer(): Buffer {
    return errorResponse({ severity: 'FATAL', code: this.code, message: this.message, detail: this.detail, hint: this.hint });
  }
}
