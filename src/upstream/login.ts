// Opening a logged-in server: a verified connection, the client's startup, the password request answered
// with a token, a refused token tried once more, and the failure told in the cloud's words. A session opens
// one for its client; a pool can open one with no client attached: all it needs is here.
import type { TLSSocket } from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Authenticator, Connector, Token } from '../cloud.js';
import { SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import type { RecentRejections, Rejections } from './rejections.js';
import { TokenRejected, loginUpstream, PasswordMethodRefused, type LoginResult } from './auth.js';

/** What opening a server for an instance needs. */
export interface LoginTarget {
  readonly connector: Connector;
  readonly auth: Authenticator;
  /** The whole of one try (token, connect, TLS, login) must fit in this. */
  readonly connectTimeoutMs: number;
  /** A login whose token was rejected is tried once more, with a fresh token, after this delay. */
  readonly retryDelayMs: number;
  /** Tokens refused lately, per DB user: then no retry (one check per client). */
  readonly rejections: RecentRejections;
  /** Told of each token a try got (the metrics count each token once); the Authenticator stays whole. */
  readonly tokenHad?: ((token: Token) => void) | undefined;
}

export interface OpenServerOptions {
  /** The StartupMessage to send, as the client sent it (but for a forced user). */
  readonly startup: Buffer;
  /** The DB user the token is for. */
  readonly user: string;
  /** Aborts the work (the client went away, a shutdown). */
  readonly signal: AbortSignal;
  readonly log: Logger;
}

/** A logged-in server and what it said up to ReadyForQuery (or its error after AuthenticationOk). */
export interface OpenedServer {
  readonly server: TLSSocket;
  readonly login: LoginResult;
}

/**
 * Connect and log in. A rejected token is tried once more, fresh, after a short delay, while the client
 * has heard nothing (docs/protocol.md D6; an overloaded instance may refuse a valid token) — unless tokens for
 * this user were refused within the last minute: then each client costs one check (RDS throttles them).
 */
export async function openServer(target: LoginTarget, options: OpenServerOptions): Promise<OpenedServer> {
  const { rejections } = target;
  // A name the cloud never accepts costs no connection and no token.
  const refused = target.auth.refuseUser?.(options.user);
  if (refused) throw refused;
  // Known before this client's first try: a retry would only add another check to a refusal.
  const known = rejections.recent(options.user);
  const tried: TriedToken[] = [];
  for (;;) {
    const startedAt = Date.now();
    try {
      const opened = await attempt(target, options, tried.at(-1)?.token);
      if (opened.login.token) rejections.clear(options.user);
      return opened;
    } catch (err) {
      if (!(err instanceof TokenRejected)) throw err;
      tried.push({ token: err.token, fresh: err.token.signedAt >= startedAt });
      rejections.note(options.user);
      if (tried.length > 1 || known) throw explainRejection(target, err, options.user, tried, known);
      options.log.debug({ ...err.token.signer, fresh: tried[0]!.fresh }, 'token rejected; retrying once with a fresh one');
      await delay(target.retryDelayMs, undefined, { signal: options.signal });
    }
  }
}

/**
 * One try: the token (a cache hit in the steady state) is had while the connection is made, and the whole
 * try, the wait for credentials included, is bounded by the connect timeout.
 */
async function attempt(target: LoginTarget, options: OpenServerOptions, notThis: Token | undefined): Promise<OpenedServer> {
  options.signal.throwIfAborted();
  const ms = target.connectTimeoutMs;
  let tokenSettled = false;
  let passwordAsked = false;
  const token = target.auth
    .token(options.user, notThis)
    .then((had) => (target.tokenHad?.(had), had))
    .finally(() => (tokenSettled = true));
  token.catch(() => undefined);
  const controller = new AbortController();
  let server: TLSSocket | undefined;
  const timer = setTimeout(() => {
    if (!tokenSettled && (!server || passwordAsked)) controller.abort(target.auth.tokenTimeout(ms));
    // Still connecting: the connector's own timer, a moment later, names the stage that stalled.
    else if (server)
      controller.abort(
        new WireError(SqlState.UnableToConnect, `timed out after ${ms / 1000} s waiting for the server to complete the login`, {
          reason: Failure.UpstreamTimeout,
        }),
      );
  }, ms);
  const onAbort = () => controller.abort(options.signal.reason);
  options.signal.addEventListener('abort', onAbort, { once: true });
  try {
    server = await target.connector.connect(controller.signal);
    const login = await loginUpstream(server, options.startup, { token: () => ((passwordAsked = true), token), signal: controller.signal });
    return { server, login };
  } catch (err) {
    server?.destroy();
    if (controller.signal.aborted) throw controller.signal.reason;
    if (err instanceof PasswordMethodRefused) throw target.auth.notTokenUser(options.user, err.method);
    throw target.connector.explain?.(err) ?? err;
  } finally {
    clearTimeout(timer);
    options.signal.removeEventListener('abort', onAbort);
  }
}

/** A token tried for this login, and whether it was made for it (or reused from the cache). */
interface TriedToken {
  readonly token: Token;
  readonly fresh: boolean;
}

/**
 * A refusal keeps the server's words (README, Troubleshooting); the cloud adds what was signed and the causes
 * to check, the engine which tokens were tried, how fresh, and the refusals on record.
 */
function explainRejection(
  target: LoginTarget,
  err: TokenRejected,
  user: string,
  tried: readonly TriedToken[],
  known: Rejections | undefined,
): WireError {
  const now = Date.now();
  const what = tried.map((t) =>
    t.fresh ? 'a token signed for this login' : `a cached token signed ${Math.round((now - t.token.signedAt) / 1000)} s earlier`,
  );
  const why = known
    ? ` It was not tried again: the server refused tokens for this endpoint and user ${known.count} time${known.count === 1 ? '' : 's'} in the last ${target.rejections.windowMs / 1000} s, the last ${Math.round((now - known.lastAt) / 1000)} s ago.`
    : '';
  const cloud = target.auth.rejection(user, err.token);
  return new WireError(SqlState.InvalidAuthorization, err.message, {
    reason: Failure.IamRejected,
    detail: `${cloud.detail} The server rejected ${what.join(', then ')}.${why}`,
    hint: cloud.hint,
  });
}
