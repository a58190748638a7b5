// The client-facing half of the startup phase: packets a frontend sends before it is authenticated
// (docs/protocol.md B1-B10). pg-protocol only covers the backend's side, so this is ours.
import {
  CANCEL_HEADER_SIZE,
  LENGTH_SIZE,
  MAX_CANCEL_KEY,
  MAX_IDENTIFIER_BYTES,
  MAX_STARTUP_PACKET,
  MIN_CANCEL_KEY,
  MIN_STARTUP_PACKET,
  NEGOTIATION_REQUEST_SIZE,
  RequestCode,
  SqlState,
  SUPPORTED_MAJOR,
  TLS_HANDSHAKE_RECORD,
} from './constants.js';
import { Failure, WireError } from './errors.js';

/** One startup parameter, kept as raw bytes so it can be forwarded unchanged whatever its encoding. */
export interface StartupParam {
  readonly name: string;
  readonly value: Buffer;
}

export interface StartupMessage {
  readonly kind: 'startup';
  /** major << 16 | minor, passed upstream unchanged: the server negotiates the minor version. */
  readonly version: number;
  readonly params: readonly StartupParam[];
  /** The packet exactly as the client sent it. */
  readonly bytes: Buffer;
  readonly user: string;
  readonly database: string;
  readonly applicationName: string | undefined;
}

export interface CancelRequest {
  readonly kind: 'cancel';
  readonly pid: number;
  readonly key: Buffer;
  readonly bytes: Buffer;
}

export type StartupPacket =
  | { readonly kind: 'ssl' }
  | { readonly kind: 'gssenc' }
  | { readonly kind: 'tls-hello' }
  | CancelRequest
  | StartupMessage;

/** What `readStartupPacket` found at the front of the buffer. */
export type StartupRead = { packet: StartupPacket; size: number } | { needed: number };

const violation = (message: string, reason: Failure = Failure.BadStartup) => new WireError(SqlState.ProtocolViolation, message, { reason });

/**
 * Read one startup-phase packet from the front of `buf`. Returns the packet and its size, or how many
 * bytes are needed before one can be read. Throws WireError for anything a server would refuse.
 */
export function readStartupPacket(buf: Buffer): StartupRead {
  if (buf.length >= 1 && buf[0] === TLS_HANDSHAKE_RECORD) {
    // A length word starting 0x16 would be > 10004 anyway; name it for what it is (B3).
    return { packet: { kind: 'tls-hello' }, size: 0 };
  }
  if (buf.length < LENGTH_SIZE) return { needed: LENGTH_SIZE };
  const length = buf.readUInt32BE(0);
  if (length < MIN_STARTUP_PACKET || length > MAX_STARTUP_PACKET) {
    // Not the Postgres protocol (an HTTP request reads as 0x47455420): nothing useful to say (B1).
    throw new WireError(SqlState.ProtocolViolation, `invalid length of startup packet: ${length}`, {
      reason: Failure.BadStartup,
      silent: true,
    });
  }
  if (buf.length < length) return { needed: length };
  const bytes = buf.subarray(0, length);
  return { packet: decodeStartupPacket(bytes), size: length };
}

function decodeStartupPacket(bytes: Buffer): StartupPacket {
  const code = bytes.readUInt32BE(LENGTH_SIZE);
  switch (code) {
    case RequestCode.SSLRequest:
    case RequestCode.GSSENCRequest:
      if (bytes.length !== NEGOTIATION_REQUEST_SIZE) throw violation('invalid length of encryption request packet');
      return { kind: code === RequestCode.SSLRequest ? 'ssl' : 'gssenc' };
    case RequestCode.CancelRequest:
      return decodeCancel(bytes);
  }
  const major = code >>> 16;
  if (major !== SUPPORTED_MAJOR) {
    throw new WireError(
      SqlState.FeatureNotSupported,
      `unsupported frontend protocol ${major}.${code & 0xffff}: server supports 3.0 to 3.2`,
      { reason: Failure.BadStartup },
    );
  }
  return decodeStartupMessage(bytes, code);
}

function decodeCancel(bytes: Buffer): CancelRequest {
  const keyLength = bytes.length - CANCEL_HEADER_SIZE;
  if (keyLength < MIN_CANCEL_KEY || keyLength > MAX_CANCEL_KEY) {
    throw violation(`invalid length of cancel request packet: ${bytes.length}`, Failure.BadCancel);
  }
  return {
    kind: 'cancel',
    pid: bytes.readInt32BE(LENGTH_SIZE + 4),
    key: bytes.subarray(CANCEL_HEADER_SIZE),
    bytes,
  };
}

const FALSE_VALUES = new Set(['false', 'off', 'no', '0']);

function decodeStartupMessage(bytes: Buffer, version: number): StartupMessage {
  const bodyStart = LENGTH_SIZE + 4;
  // The list of name/value pairs ends with an empty name: the packet's last byte must be that NUL (B8).
  if (bytes[bytes.length - 1] !== 0) throw violation('invalid startup packet layout: expected terminator as last byte');
  const params: StartupParam[] = [];
  let at = bodyStart;
  const end = bytes.length - 1;
  while (at < end) {
    const nameEnd = bytes.indexOf(0, at); // found: bytes[end] is NUL
    const valueEnd = bytes.indexOf(0, nameEnd + 1);
    // An empty name ends the list, so it must be the last byte; a name needs a terminated value after it.
    if (nameEnd === at || valueEnd === -1 || valueEnd >= end) {
      throw violation('invalid startup packet layout: expected terminator as last byte');
    }
    const name = bytes.toString('utf8', at, nameEnd);
    // PostgreSQL keeps the last value of a repeated name; a proxy that checks the first would vet one
    // packet and forward another (a second database, user or replication value). Refuse the ambiguity.
    if (params.some((p) => p.name === name)) {
      throw new WireError(SqlState.ProtocolViolation, `startup packet repeats the parameter "${name.slice(0, 64)}"`, {
        reason: Failure.BadStartup,
        hint: 'Send each startup parameter once.',
      });
    }
    params.push({ name, value: bytes.subarray(nameEnd + 1, valueEnd) });
    at = valueEnd + 1;
  }
  const get = (name: string) => params.find((p) => p.name === name)?.value;
  const user = get('user');
  if (!user || user.length === 0) {
    throw new WireError(SqlState.InvalidAuthorization, 'no PostgreSQL user name specified in startup packet', {
      reason: Failure.BadStartup,
    });
  }
  checkUser(user);
  const replication = get('replication');
  if (replication && !FALSE_VALUES.has(replication.toString('utf8').toLowerCase())) {
    throw new WireError(SqlState.FeatureNotSupported, 'replication connections are not supported through pg-iam-proxy', {
      reason: Failure.BadStartup,
      hint: 'RDS does not allow replication connections to log in with IAM authentication.',
    });
  }
  const database = get('database');
  const applicationName = get('application_name');
  return {
    kind: 'startup',
    version,
    params,
    bytes,
    user: user.toString('utf8'),
    database: database && database.length > 0 ? database.toString('utf8') : user.toString('utf8'),
    applicationName: applicationName?.toString('utf8'),
  };
}

/** A user name the server would truncate or mangle would make a token for a different name (B8). */
export function checkUser(user: Buffer): void {
  if (user.length > MAX_IDENTIFIER_BYTES) {
    throw new WireError(SqlState.NameTooLong, `user name is longer than ${MAX_IDENTIFIER_BYTES} bytes`, {
      reason: Failure.BadStartup,
      hint: 'PostgreSQL truncates names to 63 bytes, so an IAM token signed for this name could never match.',
    });
  }
}

/**
 * Rebuild a StartupMessage with `user` replaced (--db-user), every other parameter byte for byte and in
 * order. Never pg-protocol's serialize.startup: it appends client_encoding (docs/protocol.md D1).
 */
export function withUser(message: StartupMessage, user: string): Buffer {
  const userBytes = Buffer.from(user, 'utf8');
  checkUser(userBytes);
  const params = message.params.some((p) => p.name === 'user')
    ? message.params.map((p) => (p.name === 'user' ? { name: p.name, value: userBytes } : p))
    : message.params;
  return startupMessage(message.version, params);
}

/** Serialize a StartupMessage from raw parameters. */
export function startupMessage(version: number, params: readonly StartupParam[]): Buffer {
  const names = params.map((p) => Buffer.from(p.name, 'utf8'));
  let size = LENGTH_SIZE + 4 + 1;
  for (const [i, p] of params.entries()) size += names[i]!.length + 1 + p.value.length + 1;
  const out = Buffer.alloc(size);
  out.writeUInt32BE(size, 0);
  out.writeUInt32BE(version, LENGTH_SIZE);
  let at = LENGTH_SIZE + 4;
  params.forEach((p, i) => {
    at += names[i]!.copy(out, at) + 1;
    at += p.value.copy(out, at) + 1;
  });
  return out;
}
