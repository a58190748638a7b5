// Phase 3: log in upstream. Send the client's StartupMessage, answer the server's cleartext password
// request (R/3) with a token, then read up to ReadyForQuery (docs/protocol.md D1-D6, E2).
import type { TLSSocket } from 'node:tls';
import { serialize } from 'pg-protocol';
import { AuthCode, BackendCode, SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { authCode, authMethodName, decodeBackendKey, decodeError, readBackendFrame, type BackendFrame } from '../protocol/backend.js';
import type { Token } from '../cloud.js';
import { Inbox } from '../net/inbox.js';

/** The server refused the token: SQLSTATE 28000 after the password message. Retryable while the client knows nothing. */
export class TokenRejected extends WireError {
  /** Not enumerable: an error object that is ever logged or serialized must not carry the token. */
  declare readonly token: Token;

  constructor(message: string, token: Token) {
    super(SqlState.InvalidAuthorization, message, { reason: Failure.IamRejected });
    this.name = 'TokenRejected';
    Object.defineProperty(this, 'token', { value: token, enumerable: false });
  }
}

/** An ErrorResponse the server sent before authentication, relayed byte for byte (D6). */
export class UpstreamError extends WireError {
  constructor(
    private readonly frame: Buffer,
    code: string,
    message: string,
  ) {
    super(code, message, { reason: Failure.UpstreamError });
    this.name = 'UpstreamError';
  }
  override toBuffer(): Buffer {
    return this.frame;
  }
}

export interface LoginResult {
  /** Everything the client must receive, in order: held messages, AuthenticationOk ... ReadyForQuery. */
  readonly toClient: Buffer;
  /** pid + secret key from BackendKeyData, for cancel routing (E2). */
  readonly backendKey: Buffer | undefined;
  /** The server ended the login after AuthenticationOk (e.g. database does not exist): its message. */
  readonly failure: string | undefined;
  /** The token that logged in; none when the server let the user in without asking (trust, cert). */
  readonly token: Token | undefined;
}

/**
 * The server asked for another kind of password (MD5, SCRAM, ...): the user logs in with a password,
 * not a token. Its words for the client come from the cloud (Authenticator.notTokenUser).
 */
export class PasswordMethodRefused extends WireError {
  constructor(readonly method: string) {
    super(SqlState.InvalidAuthorization, `the server asked for ${method} authentication, which pg-iam-proxy does not relay`, {
      reason: Failure.NotIamUser,
    });
    this.name = 'PasswordMethodRefused';
  }
}

export interface LoginOptions {
  /** The token to answer the password request with; called at most once. */
  readonly token: () => Promise<Token>;
  readonly signal?: AbortSignal | undefined;
}

async function nextFrame(inbox: Inbox): Promise<BackendFrame> {
  for (;;) {
    const frame = readBackendFrame(inbox.buffered);
    if (frame) {
      inbox.consume(frame.bytes.length);
      return frame;
    }
    await inbox.fill(inbox.buffered.length + 1);
  }
}

/**
 * Log in on a fresh verified connection. On success the socket is paused with nothing left unread in
 * the proxy: bytes after ReadyForQuery (none, in a sane server) are part of `toClient`.
 */
export async function loginUpstream(upstream: TLSSocket, startup: Buffer, options: LoginOptions): Promise<LoginResult> {
  const inbox = new Inbox(upstream, 64 * 1024);
  const stop = () => inbox.fail(options.signal!.reason);
  options.signal?.addEventListener('abort', stop, { once: true });
  try {
    upstream.write(startup);
    // Messages to pass on that came before the login finished (NegotiateProtocolVersion, notices): held,
    // so that a retry stays invisible to the client.
    const held: Buffer[] = [];
    let sent: Token | undefined;
    for (;;) {
      const frame = await nextFrame(inbox).catch((err) => {
        throw options.signal?.aborted ? err : closedEarly(err, 'authentication');
      });
      switch (frame.code) {
        case BackendCode.Authentication: {
          const code = authCode(frame);
          if (code === AuthCode.Ok) return await afterAuthenticationOk(inbox, [...held, frame.bytes], sent, options);
          if (code !== AuthCode.CleartextPassword) throw new PasswordMethodRefused(authMethodName(code));
          if (sent) throw protocol('the server asked for a password twice');
          sent = await untilAborted(options.token(), options.signal);
          upstream.write(serialize.password(sent.value));
          break;
        }
        case BackendCode.ErrorResponse: {
          const err = decodeError(frame);
          // RDS refuses a token through PAM (28000); Azure and Cloud SQL check it in their own hooks, which
          // may answer as a refused password (28P01): a refusal of the token either way.
          if (sent && (err.code === SqlState.InvalidAuthorization || err.code === SqlState.InvalidPassword))
            throw new TokenRejected(err.message, sent);
          throw new UpstreamError(frame.bytes, err.code ?? SqlState.ConnectionFailure, err.message);
        }
        case BackendCode.NegotiateProtocolVersion: // D4
        case BackendCode.NoticeResponse:
          held.push(frame.bytes);
          break;
        default:
          throw protocol(`the server sent message '${String.fromCharCode(frame.code)}' before authentication completed`);
      }
    }
  } finally {
    options.signal?.removeEventListener('abort', stop);
    inbox.release();
  }
}

/** After AuthenticationOk every byte is the client's (D5): collect up to ReadyForQuery, noting BackendKeyData. */
async function afterAuthenticationOk(
  inbox: Inbox,
  toClient: Buffer[],
  token: Token | undefined,
  options: LoginOptions,
): Promise<LoginResult> {
  let backendKey: Buffer | undefined;
  for (;;) {
    const frame = await nextFrame(inbox).catch((err) => {
      throw options.signal?.aborted ? err : closedEarly(err, 'session startup');
    });
    toClient.push(frame.bytes);
    if (frame.code === BackendCode.BackendKeyData) backendKey = Buffer.from(decodeBackendKey(frame));
    if (frame.code === BackendCode.ReadyForQuery || frame.code === BackendCode.ErrorResponse) {
      const failure = frame.code === BackendCode.ErrorResponse ? decodeError(frame).message : undefined;
      toClient.push(inbox.buffered);
      return { toClient: Buffer.concat(toClient), backendKey, failure, token };
    }
  }
}

/** `work`, or the signal's reason as soon as it aborts (a wait for credentials must not outlive the login). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function closedEarly(err: unknown, during: string): WireError {
  if (err instanceof WireError) return err;
  return new WireError(SqlState.ConnectionFailure, `the server closed the connection during ${during}`, {
    reason: Failure.UpstreamClosed,
    cause: err,
  });
}

const protocol = (message: string) => new WireError(SqlState.ProtocolViolation, message, { reason: Failure.UpstreamProtocol });
