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

/**
 * Why a session failed before it was ready: one stable name per cause, used alike by the client's error
 * (WireError.reason), the label of pg_iam_proxy_auth_failures_total and the log's `failure` field, as
 * undici names its errors. The values are the metric's label values: dashboards rely on them.
 */
export const Failure = {
  // The client's side, before any upstream work.
  BadStartup: 'bad_startup', // a malformed, oversized or unsupported startup packet
  BadCancel: 'bad_cancel', // a CancelRequest of the wrong length
  StartupTimeout: 'startup_timeout', // the startup (packets, TLS, password) took longer than --startup-timeout
  ClientTls: 'client_tls', // the TLS handshake with the client failed
  ClientAuth: 'client_auth', // malformed SCRAM messages from the client
  ClientPassword: 'client_password', // the client's password was wrong
  ClientClosed: 'client_closed', // the client hung up before its startup was done (not counted)
  ClientGone: 'client_gone', // the client left while the proxy logged in for it
  UserNotAllowed: 'user_not_allowed', // --allow-user
  DatabaseNotAllowed: 'database_not_allowed', // --allow-database
  MaxConnections: 'max_connections', // --max-connections
  PoolTimeout: 'pool_timeout', // no pooled server free within --pool-wait-timeout
  IdleTransaction: 'idle_transaction', // a pooled client idle in a transaction beyond --idle-transaction-timeout
  ClientProtocol: 'client_protocol', // transaction pooling: a message it cannot relay (a statement name reused)
  // Credentials and tokens.
  NoCredentials: 'no_credentials', // no token could be had (no credentials, expired ones)
  CredentialsTimeout: 'credentials_timeout', // none came within --connect-timeout
  IamRejected: 'iam_rejected', // the server refused the token
  NotIamUser: 'not_iam_user', // the server asked for another kind of password
  BadUserName: 'bad_user_name', // a user name the cloud never accepts (Cloud SQL: the .gserviceaccount.com suffix left on)
  // The server and the way to it.
  UpstreamUnreachable: 'upstream_unreachable', // TCP connect failed, or the server hung up at the SSLRequest
  UpstreamTimeout: 'upstream_timeout', // connect, TLS or login took longer than --connect-timeout
  UpstreamNoTls: 'upstream_no_tls', // the server declined TLS (never plaintext)
  UpstreamProtocol: 'upstream_protocol', // the server broke the protocol before the login completed
  UpstreamClosed: 'upstream_closed', // the server hung up during the login
  UpstreamError: 'upstream_error', // the server's own error (relayed), before or right after AuthenticationOk
  TlsUntrusted: 'tls_untrusted', // no trusted CA vouches for the server's certificate
  TlsNameMismatch: 'tls_name_mismatch', // the certificate names another host
  TlsExpired: 'tls_expired',
  TlsClientCertRequired: 'tls_client_cert_required', // the server demands a client certificate (Cloud SQL's connector-only instances)
  TlsFailed: 'tls_failed', // any other TLS failure
  // The proxy itself.
  Shutdown: 'shutdown', // ended by a shutdown
  Internal: 'internal', // a failure the design did not foresee
} as const;
export type Failure = (typeof Failure)[keyof typeof Failure];

export interface WireErrorOptions {
  detail?: string | undefined;
  hint?: string | undefined;
  /** Why, from the catalogue: for logs and the auth_failures metric. */
  reason: Failure;
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
  readonly reason: Failure;
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
