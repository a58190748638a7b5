// The backend's messages the proxy reads before the splice (docs/protocol.md D2): framing with a size cap,
// and decoding of the few it acts on. Error fields are decoded by pg-protocol's own parser.
import { Parser } from 'pg-protocol/dist/parser.js';
import type { BackendMessage, DatabaseError } from 'pg-protocol/dist/messages.js';
import { AuthCode, BackendCode, CODE_SIZE, HEADER_SIZE, LENGTH_SIZE, SqlState } from './constants.js';
import { Failure, WireError } from './errors.js';

/** Largest pre-auth backend message accepted: real ones (errors, parameter status) are far smaller. */
export const MAX_PREAUTH_MESSAGE = 64 * 1024;

export interface BackendFrame {
  readonly code: number;
  /** The whole message, header included. */
  readonly bytes: Buffer;
}

/** One backend message from the front of `buf`, or null until it is complete. */
export function readBackendFrame(buf: Buffer): BackendFrame | null {
  if (buf.length < HEADER_SIZE) return null;
  const length = buf.readUInt32BE(CODE_SIZE);
  if (length < LENGTH_SIZE || length > MAX_PREAUTH_MESSAGE) {
    throw new WireError(SqlState.ProtocolViolation, `the server sent an invalid message (length ${length}) during startup`, {
      reason: Failure.UpstreamProtocol,
    });
  }
  const size = CODE_SIZE + length;
  if (buf.length < size) return null;
  return { code: buf[0]!, bytes: buf.subarray(0, size) };
}

/** The request code of an Authentication ('R') message. */
export function authCode(frame: BackendFrame): number {
  if (frame.bytes.length < HEADER_SIZE + 4) {
    throw new WireError(SqlState.ProtocolViolation, 'the server sent a truncated authentication request', {
      reason: Failure.UpstreamProtocol,
    });
  }
  return frame.bytes.readInt32BE(HEADER_SIZE);
}

export const authMethodName = (code: number): string =>
  ({
    [AuthCode.KerberosV5]: 'Kerberos V5',
    [AuthCode.CleartextPassword]: 'cleartext password',
    [AuthCode.MD5Password]: 'MD5 password',
    [AuthCode.GSS]: 'GSSAPI',
    [AuthCode.SSPI]: 'SSPI',
    [AuthCode.SASL]: 'SCRAM-SHA-256 (SASL) password',
  })[code] ?? `unknown (${code})`;

/**
 * Whether an ErrorResponse/NoticeResponse body is well formed: fields of a non-zero type byte and a
 * NUL-terminated string, then a final NUL, all inside the frame. pg-protocol's parser trusts this and
 * reads past the end of its buffer forever when a string is unterminated (found by fuzzing).
 */
function wellFormedFields(bytes: Buffer): boolean {
  let at = HEADER_SIZE;
  while (at < bytes.length) {
    if (bytes[at] === 0) return at === bytes.length - 1;
    const end = bytes.indexOf(0, at + 1);
    if (end < 0) return false;
    at = end + 1;
  }
  return false;
}

/** Decode an ErrorResponse or NoticeResponse with pg-protocol's parser, once its shape is checked. */
export function decodeError(frame: BackendFrame): DatabaseError {
  if (!wellFormedFields(frame.bytes)) {
    throw new WireError(SqlState.ProtocolViolation, 'the server sent a malformed error message during startup', {
      reason: Failure.UpstreamProtocol,
    });
  }
  let decoded: BackendMessage | undefined;
  new Parser().parse(frame.bytes, (msg) => (decoded = msg));
  return decoded as DatabaseError;
}

/** BackendKeyData: pid and a secret key of 4 bytes (3.0) or up to 256 (3.2); pg-protocol reads only 4. */
export function decodeBackendKey(frame: BackendFrame): Buffer {
  // Keep pid + key as the bytes a CancelRequest carries after its code.
  return frame.bytes.subarray(HEADER_SIZE);
}

/** A backend message: code, length, body (the few the proxy itself sends to a pooled client). */
function message(code: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER_SIZE + body.length);
  out[0] = code;
  out.writeUInt32BE(LENGTH_SIZE + body.length, CODE_SIZE);
  body.copy(out, HEADER_SIZE);
  return out;
}

/** AuthenticationOk. */
export const authenticationOk = (): Buffer => message(BackendCode.Authentication, Buffer.from([0, 0, 0, AuthCode.Ok]));

/** BackendKeyData: pid and secret key (4 bytes in protocol 3.0, up to 256 in 3.2). */
export function backendKeyData(pid: number, key: Buffer): Buffer {
  const body = Buffer.allocUnsafe(4 + key.length);
  body.writeInt32BE(pid, 0);
  key.copy(body, 4);
  return message(BackendCode.BackendKeyData, body);
}

/** ReadyForQuery with a transaction status ('I', 'T', 'E'). */
export const readyForQuery = (status: number): Buffer => message(BackendCode.ReadyForQuery, Buffer.from([status]));
