// One logged-in server connection a pool owns: what it said at login (the ParameterStatus values a client
// is greeted with), its own cancel key, and the health checks between clients.
import type { TLSSocket } from 'node:tls';
import { BackendCode, CANCEL_HEADER_SIZE, HEADER_SIZE, LENGTH_SIZE, RequestCode, SqlState } from '../protocol/constants.js';
import { authenticationOk, readBackendFrame, readyForQuery } from '../protocol/backend.js';
import { Failure, WireError } from '../protocol/errors.js';
import { simpleQuery } from '../upstream/simple-query.js';
import type { Statement } from './statements.js';

let nextServerId = 1;

import { Ledger, TxStatus } from './ledger.js';
import { settingsQuery } from './params.js';
import { reads, useUserBuffer } from '../net/user-buffer.js';

/**
 * A pooled server's read buffer: TLS hands over its plaintext at most a record (16 KiB) at a time, and a
 * server is one of few (a pool's), so each has its own.
 */
const READ_BUFFER = 16 * 1024;

export { TxStatus };

export class PooledServer {
  readonly id = nextServerId++;
  readonly createdAt = Date.now();
  lastUsedAt = Date.now();
  /** ParameterStatus messages by name, as the server last sent them: replayed to each new client. */
  private readonly params = new Map<string, Buffer>();
  /** Whether the socket is gone (closed, failed): never handed out again. */
  broken = false;
  /** The server's NegotiateProtocolVersion at login, if any: every client of the pool asked the same. */
  private negotiation: Buffer | undefined;
  /**
   * Transaction pooling: the statements prepared on this server under the proxy's names, least recently
   * used first (a Set keeps insertion order: a use moves one to the end).
   */
  readonly prepared = new Set<Statement>();
  /**
   * The server may hold statements under the proxy's names that `prepared` does not list (one it was said
   * to have was gone): each is closed before it is prepared again, until the next reset.
   */
  statementsUnsure = false;
  /**
   * Whose unnamed statement the server holds (it outlives a transaction, until the next unnamed Parse or
   * simple Query): the token of the client's Parse, or undefined for none or one no client can claim.
   */
  unnamed: object | undefined;
  /** What the server owes the client that holds it: settled whenever the server is in its pool. */
  readonly ledger = new Ledger();
  /** The tracked parameters set on it now (params.ts); opened with none, back to none after a reset. */
  tracked: ReadonlyMap<string, Buffer> = new Map();
  /** What is set is not known (a SET that failed, a reset query that may not reset): RESET ALL first. */
  trackedUnknown = false;
  /** Cancels being forwarded to this server: it is not handed to another client until they are done. */
  private cancelling = 0;
  private afterCancels: (() => void) | undefined;

  /**
   * Who hears the socket now: the transaction relay that holds the server, or the pool watching it idle;
   * undefined while a session relay or one of the proxy's own queries listens to the socket itself. The
   * socket's listeners are attached once, here, and tell whoever that is: a server handed from client to
   * client at every transaction does not have listeners added and removed each time.
   */
  private holder: ServerListener | undefined;
  /** The pool's word for an idle server that is gone (it spoke or closed), while it is watched. */
  private idleGone: ((why: string) => void) | undefined;
  /** The buffer reads land in, and whether the last read's bytes were kept (then the next gets a new one). */
  private buffer: Buffer | undefined;
  private kept = false;

  constructor(
    readonly socket: TLSSocket,
    /** pid + secret key from the server's BackendKeyData: what a CancelRequest for it must carry. */
    readonly backendKey: Buffer | undefined,
    greeting: Buffer,
    /** Reads land in a buffer of the server's own, for a `reader` (else through the socket's stream). */
    ownBuffer = false,
  ) {
    this.learn(greeting);
    socket.on('data', (chunk: Buffer) => this.holder?.serverData(chunk));
    socket.on('end', () => this.holder?.serverEnded());
    socket.on('close', () => {
      this.broken = true;
      this.holder?.serverEnded();
    });
    socket.on('error', (err: Error) => {
      this.broken = true;
      this.holder?.serverFailed(err);
    });
    const buffer = ownBuffer ? Buffer.allocUnsafeSlow(READ_BUFFER) : undefined;
    if (buffer && useUserBuffer(socket, buffer, this.onRead, this.nextBuffer)) this.buffer = buffer;
  }

  /** A read's bytes, at the start of the buffer; false stops reading (Node's readStop) until the next resume(). */
  private readonly onRead = (n: number): boolean => {
    const chunk = this.buffer!.subarray(0, n);
    const socket = this.socket;
    const read = this.holder?.serverRead;
    if (read && socket.readableLength === 0 && !socket.isPaused()) {
      this.kept = read.call(this.holder, chunk);
      return true;
    }
    reads.copied++;
    // As the stream path does: once the stream holds its high-water mark, reading stops. A paused socket
    // still gets the records TLS had already decrypted, and a push below the mark has Node read on (its
    // read(0) starts the handle again): without the stop, a client that reads slowly would have the
    // server's whole answer read into memory, the server never held back.
    return socket.push(Buffer.from(chunk));
  };

  private readonly nextBuffer = (): Buffer | undefined => {
    if (!this.kept) return undefined;
    this.kept = false;
    reads.held++;
    return (this.buffer = Buffer.allocUnsafeSlow(READ_BUFFER));
  };

  /** Note every ParameterStatus in `bytes` (whole messages): the server's values change with SET, RESET. */
  learn(bytes: Buffer): void {
    for (let at = 0; at < bytes.length; ) {
      const frame = readBackendFrame(bytes.subarray(at));
      if (!frame) break;
      if (frame.code === BackendCode.NegotiateProtocolVersion) this.negotiation = Buffer.from(frame.bytes);
      else if (frame.code === BackendCode.ParameterStatus) {
        const name = frame.bytes.toString('utf8', HEADER_SIZE, frame.bytes.indexOf(0, HEADER_SIZE));
        this.params.set(name, Buffer.from(frame.bytes));
      }
      at += frame.bytes.length;
    }
  }

  /**
   * What a client handed this server hears instead of a login: the protocol negotiation the server did for
   * the same startup, AuthenticationOk, the server's ParameterStatus values, a BackendKeyData of the
   * proxy's own (`key`: the client never learns the server's), ReadyForQuery idle.
   */
  greeting(key: Buffer): Buffer {
    return greeting(this.template(), key);
  }

  /** What a client is greeted with at login, whichever server of the pool it is later lent. */
  template(): GreetingTemplate {
    return { negotiation: this.negotiation, params: [...this.params.values()], keyLength: this.backendKey?.length ?? 8 };
  }

  /**
   * A cancel is on its way to this server: until `done` is called it is not handed on (a cancel that
   * lands after the query it was for must not hit the next client's). `done` runs whatever waited.
   */
  beginCancel(): () => void {
    this.cancelling++;
    let called = false;
    return () => {
      if (called) return;
      called = true;
      if (--this.cancelling > 0) return;
      const next = this.afterCancels;
      this.afterCancels = undefined;
      next?.();
    };
  }

  /** Run `next` now, or once the cancels in flight to this server are done. */
  whenCancelsDone(next: () => void): void {
    if (this.cancelling === 0) next();
    else this.afterCancels = next;
  }

  /** A CancelRequest for this server's backend, or undefined when it sent no key. */
  cancelRequest(): Buffer | undefined {
    if (!this.backendKey) return undefined;
    const out = Buffer.alloc(CANCEL_HEADER_SIZE - 4 + this.backendKey.length);
    out.writeUInt32BE(out.length, 0);
    out.writeUInt32BE(RequestCode.CancelRequest, LENGTH_SIZE);
    this.backendKey.copy(out, LENGTH_SIZE + 4);
    return out;
  }

  /**
   * Run `sql` (or `queries` whole Query messages, `what` in words) as a simple query and read to its ReadyForQuery:
   * the reset between clients, or the check
   * of a server idle for long. Resolves only when the server ends idle ('I') with no error; the
   * ParameterStatus it sends on the way (RESET ALL changes reported values) are learnt.
   */
  async run(sql: string | Buffer, timeoutMs: number, what = sql as string, queries = 1): Promise<void> {
    const { status, error } = await simpleQuery(
      this.socket,
      sql,
      timeoutMs,
      (frame) => {
        if (frame.code === BackendCode.ParameterStatus) this.learn(frame.bytes);
      },
      queries,
    );
    this.unnamed = undefined; // a simple Query drops the unnamed statement
    if (error !== undefined || status !== TxStatus.Idle) {
      throw new WireError(
        SqlState.ConnectionFailure,
        `the server did not come back idle from ${JSON.stringify(what)}: ${error ?? `status ${String.fromCharCode(status)}`}`,
        { reason: Failure.UpstreamProtocol },
      );
    }
  }

  /**
   * Session mode: take the tracked parameters to a client's (SET where they differ, RESET where it asked
   * for none), read to the ReadyForQuery; the ParameterStatus values on the way are learnt. Rejects with
   * the server's own words when it refuses a value.
   */
  async track(want: ReadonlyMap<string, Buffer>, timeoutMs: number): Promise<void> {
    const query = settingsQuery(want, this.tracked, this.trackedUnknown);
    if (!query) return;
    const { status, error } = await simpleQuery(this.socket, query, timeoutMs, (frame) => {
      if (frame.code === BackendCode.ParameterStatus) this.learn(frame.bytes);
    });
    this.unnamed = undefined;
    if (error !== undefined || status !== TxStatus.Idle) {
      this.trackedUnknown = true;
      throw new WireError(
        SqlState.InvalidParameterValue,
        error ?? 'the server did not come back idle from setting the startup parameters',
        {
          reason: Failure.UpstreamError,
        },
      );
    }
    this.tracked = want;
    this.trackedUnknown = false;
  }

  /** The ParameterStatus the server last sent for `name` (any case), if it reports it. */
  reported(name: string): Buffer | undefined {
    for (const [reported, message] of this.params) if (reported.toLowerCase() === name) return message;
    return undefined;
  }

  /** A relay holds the server: from now on the socket's bytes, EOF and errors are told to it. */
  hold(listener: ServerListener): void {
    this.holder = listener;
  }

  /** The relay lets the server go: nothing it says is heard until it is held or watched again. */
  letGo(listener: ServerListener): void {
    if (this.holder === listener) this.holder = undefined;
  }

  /**
   * While idle: anything the server sends, its EOF or its close means it is gone (an administrator's FATAL,
   * a failover). `gone` is told once, with why; the pools' janitor (janitor.ts) looks after its idle time.
   */
  watch(gone: (why: string) => void): void {
    this.idleGone = gone;
    this.holder = this.idle;
    // Still reading when it comes straight from a transaction: resume() is then a no-op.
    this.socket.resume();
  }

  private readonly idle: ServerListener = {
    serverData: () => this.tellGone('it spoke while idle (terminated or failing over)'),
    serverEnded: () => this.tellGone('it closed while idle'),
    serverFailed: () => undefined, // its close follows
  };

  private tellGone(why: string): void {
    const gone = this.idleGone;
    if (!gone) return;
    this.unwatch();
    gone(why);
  }

  /**
   * Stop watching (a client gets the server, or it is checked). `pause` false: the caller holds the
   * server at once, in this same turn (a transaction relay), so reading need not stop and start again.
   */
  unwatch(pause = true): void {
    if (this.holder === this.idle) this.holder = undefined;
    this.idleGone = undefined;
    // Also when it was not watched (straight from a transaction to a waiting client): nothing it says
    // may be read before its next listener is there.
    if (pause) this.socket.pause();
  }

  /** No cancel is on its way to this server. */
  get cancelsSettled(): boolean {
    return this.cancelling === 0;
  }

  close(): void {
    this.unwatch();
    this.broken = true;
    this.socket.destroy();
  }
}

/** Who hears a pooled server's socket (PooledServer.hold): its bytes, its EOF or close, its errors. */
export interface ServerListener {
  /** A read through the socket's stream (a copy, or the stream path). */
  serverData(chunk: Buffer): void;
  /**
   * A read in the server's own buffer (valid during the call only): whether a write still holds its bytes
   * (then the next read lands in a new buffer). Without it, reads go through the stream, to serverData.
   */
  serverRead?(chunk: Buffer): boolean;
  /** Its EOF, or its close (either may come alone, or both). */
  serverEnded(): void;
  serverFailed(err: Error): void;
}

/** What a pool's clients are told at login: from its first server's login. */
export interface GreetingTemplate {
  readonly negotiation: Buffer | undefined;
  readonly params: readonly Buffer[];
  /** Bytes of the server's pid + key: the proxy's keys for clients are as long. */
  readonly keyLength: number;
}

/** AuthenticationOk, the ParameterStatus values, the proxy's BackendKeyData (`key`), ReadyForQuery idle. */
export function greeting(template: GreetingTemplate, key: Buffer): Buffer {
  return Buffer.concat([
    ...(template.negotiation ? [template.negotiation] : []),
    authenticationOk(),
    ...template.params,
    key,
    readyForQuery(TxStatus.Idle),
  ]);
}
