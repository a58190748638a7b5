// The relay of transaction pooling: a client holds a server from its first message after ReadyForQuery
// 'I' to the next ReadyForQuery 'I' with nothing outstanding, then the server goes back to the pool.
//
// Named prepared statements follow the client from server to server: its Parse of "s1" becomes a Parse of
// the proxy's name for that statement (one per distinct SQL and parameter types), its Bind and Describe
// of "s1" name the proxy's statement, prepared first (a Parse injected just before) on a server that does
// not have it yet. The answers to injected messages (ParseComplete, CloseComplete) are kept from the
// client, matched in order: every Parse and Close sent is queued with whether the client asked for it,
// and an error drops the rest of its pipeline up to Sync (the server skips them), undoing what they did.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { BackendCode as B, HEADER_SIZE, SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { MessageCursor } from '../protocol/framing.js';
import { Frontend, FrontendStream, frontendMessage, lengthFor, readCString, STATEMENT } from '../protocol/frontend.js';
import { holdBack } from '../proxy/splice.js';
import { MAX_PREPARED_STATEMENTS, type PoolKey, type Pools } from './pool.js';
import { type PooledServer, TxStatus } from './server.js';
import {
  closeStatement,
  NEVER_PREPARED,
  SCRATCH_CLOSE,
  SCRATCH_PARSE,
  STATEMENT_PREFIX,
  type Statement,
  type StatementRegistry,
} from './statements.js';

export interface TransactionEnd {
  readonly reason: string;
  readonly error: Error | undefined;
}

/** The server a transaction-mode client holds now, if any: where its cancel goes. */
export interface Holding {
  server: PooledServer | undefined;
}

/**
 * Command tags after which a server is not what its pool's next client may find: session settings, a
 * LISTEN, statements dropped under the proxy's names. It is reset (and its statements forgotten) before
 * it is lent again.
 */
const DIRTYING = /^(SET|RESET|LISTEN|DISCARD|DEALLOCATE)\b/;

/** A Parse or Close sent to the server, whose answer (ParseComplete, CloseComplete) is still to come. */
interface Expected {
  readonly code: number;
  /** Injected by the proxy: its answer is not the client's. */
  readonly swallow: boolean;
  /** The ReadyForQuery count it belongs before: an error before it drops it (the server skips it). */
  readonly group: number;
  /** Undo what sending it assumed of the server's statements, when it is skipped or fails. */
  readonly undo?: (() => void) | undefined;
}

/** Whether the proxy is draining, and who to tell when it starts (undefined: no one). */
export interface Drain {
  draining(): boolean;
  onDrain(listener: (() => void) | undefined): void;
}

export interface TransactionRelayOptions {
  readonly client: Socket;
  readonly pools: Pools;
  readonly key: PoolKey;
  /** The client went away: a wait for a server stops. */
  readonly signal: AbortSignal;
  /** The proxy is shutting down: the client is let go between transactions (at once if it is between). */
  readonly drain?: Drain | undefined;
  readonly holding: Holding;
  readonly toClient: Buffer;
  readonly pipelined: Buffer;
  readonly clientEnded: boolean;
  readonly log: Logger;
}

export function relayTransactions(options: TransactionRelayOptions): Promise<TransactionEnd> {
  return new Promise((resolve) => new TransactionRelay(options, resolve).begin());
}

class TransactionRelay {
  private readonly client: Socket;
  private readonly statements: StatementRegistry;
  private readonly maxPrepared: number;
  /** The client's named statements: its names to the proxy's statements. */
  private readonly named = new Map<string, Statement>();
  private readonly fromClient: FrontendStream;
  /** The server's messages; a CommandComplete's tag is peeked at (DIRTYING). */
  private readonly fromServer = new MessageCursor((code) => (code === B.CommandComplete ? 11 : 1));
  /** The group an error is skipping, up to its Sync: what the client sends into it is skipped too. */
  private failedGroup = -1;
  /** What ends each group sent and not yet answered: Sync (extended), Query or FunctionCall (simple). */
  private groupEnds: number[] = [];
  /** Flow control: the client is paused until the server's socket drains. */
  private heldBack = false;
  /** Linked and nothing sent yet in this transaction. */
  private fresh = false;
  private server: PooledServer | undefined;
  /** Client bytes that came while it held no server, waiting for one. */
  private queued: Buffer[] = [];
  private acquiring = false;
  /** Requests sent whose ReadyForQuery has not come back; ReadyForQuery counts sent and received. */
  private pending = 0;
  private groupsSent = 0;
  private groupsAnswered = 0;
  /** Messages sent since the last Sync, Query or FunctionCall: the server holds state for them. */
  private unsynced = false;
  private status: number = TxStatus.Idle;
  private expected: Expected[] = [];
  /** A ParameterStatus came: the server's settings may differ from its pool's, so it is reset. */
  private settingsChanged = false;
  /** Header bytes of a ParseComplete / CloseComplete to keep from the client, held from the last chunk. */
  private withheld = false;
  private clientEnded = false;
  private done = false;

  /** What the relay keeps of its options for the client's whole life: not the greeting or pipelined bytes. */
  private readonly o: Pick<TransactionRelayOptions, 'pools' | 'key' | 'signal' | 'holding' | 'drain'>;
  /** The first bytes each way, dropped once sent: an idle client holds no buffer. */
  private start: Pick<TransactionRelayOptions, 'toClient' | 'pipelined' | 'clientEnded'> | undefined;

  constructor(
    options: TransactionRelayOptions,
    private readonly resolve: (end: TransactionEnd) => void,
  ) {
    const o = options;
    this.o = { pools: o.pools, key: o.key, signal: o.signal, holding: o.holding, drain: o.drain };
    this.start = { toClient: o.toClient, pipelined: o.pipelined, clientEnded: o.clientEnded };
    this.client = o.client;
    this.statements = o.pools.statements;
    this.maxPrepared = o.pools.settings.maxPreparedStatements ?? MAX_PREPARED_STATEMENTS;
    this.fromClient = new FrontendStream({ rewrite: (c, h, r, out) => this.rewrite(c, h, r, out), passed: (c) => this.passed(c) });
  }

  begin(): void {
    this.client.on('data', this.onClientData);
    this.client.on('end', this.onClientEnd);
    this.client.on('error', this.onClientError);
    this.client.on('close', this.onClientClose);
    const first = this.start!;
    this.start = undefined;
    if (first.toClient.length > 0) this.client.write(first.toClient);
    if (first.pipelined.length > 0) this.onClientData(first.pipelined);
    if (first.clientEnded) this.onClientEnd();
    if (!this.done && !this.acquiring) this.client.resume();
    if (this.o.drain?.draining()) this.onDrain();
    else this.o.drain?.onDrain(this.onDrain);
  }

  /** Shutting down: a client between transactions goes now; one in a transaction at its end. */
  private readonly onDrain = (): void => {
    if (!this.server && !this.acquiring) this.fail(SHUTTING_DOWN);
  };

  // The client's side.

  private readonly onClientData = (chunk: Buffer): void => {
    if (this.done) return;
    if (this.server) {
      this.forward(chunk);
      return;
    }
    if (this.acquiring) {
      this.queued.push(chunk);
      return;
    }
    // A goodbye while holding nothing: no server is needed for it.
    if (this.fromClient.atBoundary && chunk.length >= 5 && chunk[0] === Frontend.Terminate) {
      this.finish('client closed the connection');
      return;
    }
    const idle = this.o.pools.tryAcquire(this.o.key);
    if (idle) {
      this.link(idle);
      this.forward(chunk);
      return;
    }
    this.queued.push(chunk);
    this.acquire();
  };

  private readonly onClientEnd = (): void => {
    this.clientEnded = true;
    if (this.acquiring) return; // its bytes are answered once a server is had
    if (!this.server || this.pending === 0) this.finish('client closed the connection');
  };

  private readonly onClientError = (err: Error): void => this.finish(`error on the client connection: ${err.message}`, err);
  private readonly onClientClose = (): void => this.finish('client closed the connection');

  /** Wait for a server (the client is not read meanwhile), then send what the client queued. */
  private acquire(): void {
    this.acquiring = true;
    this.client.pause();
    this.o.pools.acquire(this.o.key, this.o.signal).then(
      (server) => {
        this.acquiring = false;
        if (this.done) {
          this.o.pools.release(server, this.o.key, 'idle', false); // untouched
          return;
        }
        this.link(server);
        const queued = this.queued;
        this.queued = [];
        for (const chunk of queued) if (!this.done) this.forward(chunk);
        if (this.done) return;
        if (this.clientEnded && this.pending === 0) this.finish('client closed the connection');
        else if (!this.server || server.socket.writableLength <= server.socket.writableHighWaterMark) this.client.resume();
      },
      (err: Error) => {
        this.acquiring = false;
        this.fail(err);
      },
    );
  }

  /** Client bytes to the held server, statement names translated. */
  private forward(chunk: Buffer): void {
    const server = this.server!;
    const out: Buffer[] = [];
    if (this.fresh) {
      this.fresh = false;
      if (server.unnamedStatement) {
        // The last client's unnamed statement goes before this client's first message (its answer kept).
        server.unnamedStatement = false;
        this.expect(out, CLOSE_UNNAMED, B.CloseComplete, true);
      }
    }
    try {
      this.fromClient.translate(chunk, out);
    } catch (err) {
      // Nothing more goes to the server; stopped mid-message, it is not reused.
      this.fail(
        err instanceof WireError
          ? err
          : new WireError(SqlState.ProtocolViolation, `invalid message from the client: ${(err as Error).message}`, {
              reason: Failure.ClientProtocol,
            }),
      );
      return;
    }
    if (out.length > 0) server.socket.write(out.length === 1 ? out[0]! : Buffer.concat(out));
    if (this.fromClient.terminated) {
      this.finish('client closed the connection');
      return;
    }
    if (!this.heldBack && server.socket.writableLength > server.socket.writableHighWaterMark) {
      this.heldBack = true;
      this.client.pause();
      server.socket.once('drain', this.resumeClient);
    }
  }

  private readonly resumeClient = (): void => {
    this.heldBack = false;
    this.client.resume();
  };

  private passed(code: number): void {
    if (code === Frontend.Sync || code === Frontend.Query || code === Frontend.FunctionCall) {
      this.pending++;
      this.groupsSent++;
      this.groupEnds.push(code);
      this.unsynced = false;
    } else if (code !== Frontend.CopyData && code !== Frontend.CopyDone && code !== Frontend.CopyFail && code !== Frontend.Flush)
      this.unsynced = true;
  }

  /** A Parse, Bind, Describe or Close of the client: its statement names become the proxy's. */
  private rewrite(code: number, head: Buffer, rest: number, out: Buffer[]): void {
    this.unsynced = true;
    if (code === Frontend.Parse) this.parse(head, out);
    else if (code === Frontend.Bind) this.bind(head, rest, out);
    else this.describeOrClose(code, head, out);
  }

  private parse(head: Buffer, out: Buffer[]): void {
    const name = readCString(head, 5);
    if (!name || name.value === '') {
      // Sent as it is. It outlives the transaction on the server (until the next unnamed Parse): the
      // server's next client has it closed first, so it cannot Bind what this client parsed.
      this.server!.unnamedStatement = true;
      this.expect(out, head, B.ParseComplete, false);
      return;
    }
    if (this.named.has(name.value) || name.value.startsWith(STATEMENT_PREFIX)) {
      throw new WireError(SqlState.DuplicatePreparedStatement, `prepared statement "${name.value}" already exists`, {
        reason: Failure.ClientProtocol,
        hint: name.value.startsWith(STATEMENT_PREFIX)
          ? `Names starting with ${STATEMENT_PREFIX} are the proxy's own in transaction pooling.`
          : 'In transaction pooling the proxy ends the connection here (as pgbouncer does): Close a statement before preparing its name again.',
      });
    }
    const statement = this.statements.hold(head, name.next);
    this.named.set(name.value, statement);
    // Skipped (an error earlier in the pipeline) or failed: the client has no such statement, as with
    // PostgreSQL itself.
    const forget = () => {
      if (this.named.get(name.value) !== statement) return;
      this.named.delete(name.value);
      this.statements.let(statement);
    };
    const server = this.server!;
    if (server.prepared.has(statement)) {
      // Already there (another client prepared the same SQL): the client's ParseComplete comes from a
      // throwaway statement, in order and skipped on an error as a real one would be.
      this.touch(statement);
      this.expect(out, SCRATCH_PARSE, B.ParseComplete, false, forget);
      this.expect(out, SCRATCH_CLOSE, B.CloseComplete, true);
      return;
    }
    this.prepare(statement, false, out, forget);
  }

  private bind(head: Buffer, rest: number, out: Buffer[]): void {
    const portal = readCString(head, 5);
    const name = portal && readCString(head, portal.next);
    const statement = name && name.value !== '' ? this.named.get(name.value) : undefined;
    if (!statement) {
      out.push(name && this.foreign(name.value) ? renamedHead(head, portal!.next, NEVER_PREPARED, rest) : head);
      return;
    }
    this.ensure(statement, out);
    out.push(renamedHead(head, portal!.next, statement.name, rest));
  }

  private describeOrClose(code: number, head: Buffer, out: Buffer[]): void {
    const isClose = code === Frontend.Close;
    const name = head[5] === STATEMENT ? readCString(head, 6) : undefined;
    if (!name || name.value === '') {
      if (isClose) this.expect(out, head, B.CloseComplete, false);
      else out.push(head);
      return;
    }
    const statement = this.named.get(name.value);
    if (isClose) {
      if (statement) {
        this.named.delete(name.value);
        this.statements.let(statement);
      }
      // The server keeps the statement for other clients; the client gets its CloseComplete in order.
      this.expect(out, closeStatement(NEVER_PREPARED), B.CloseComplete, false);
      return;
    }
    if (!statement) {
      out.push(this.foreign(name.value) ? renamedHead(head, 6, NEVER_PREPARED, 0) : head);
      return;
    }
    this.ensure(statement, out);
    out.push(renamedHead(head, 6, statement.name, 0));
  }

  /** A name the client never prepared but that could be one of the proxy's: kept from the server. */
  private foreign(name: string): boolean {
    return name.startsWith(STATEMENT_PREFIX);
  }

  /** The statement is prepared on the held server, or a Parse for it goes first (its answer kept). */
  private ensure(statement: Statement, out: Buffer[]): void {
    if (this.server!.prepared.has(statement)) this.touch(statement);
    else this.prepare(statement, true, out);
  }

  private touch(statement: Statement): void {
    const prepared = this.server!.prepared;
    prepared.delete(statement);
    prepared.add(statement);
  }

  private prepare(statement: Statement, injected: boolean, out: Buffer[], forget?: () => void): void {
    const prepared = this.server!.prepared;
    if (prepared.size >= this.maxPrepared) {
      // The least recently used goes (--max-prepared-statements).
      const oldest = prepared.values().next().value!;
      prepared.delete(oldest);
      this.expect(out, closeStatement(oldest.name), B.CloseComplete, true, () => prepared.add(oldest));
    }
    prepared.add(statement);
    this.expect(out, statement.parse, B.ParseComplete, injected, () => {
      prepared.delete(statement);
      forget?.();
    });
  }

  private expect(out: Buffer[], message: Buffer, code: number, swallow: boolean, undo?: () => void): void {
    out.push(message);
    // Into a group an error is already skipping: the server will skip this one too, and answer nothing.
    if (this.groupsSent === this.failedGroup) undo?.();
    else this.expected.push({ code, swallow, group: this.groupsSent, undo });
  }

  // The server's side.

  private link(server: PooledServer): void {
    this.server = server;
    this.o.holding.server = server;
    this.pending = 0;
    this.groupsSent = 0;
    this.groupsAnswered = 0;
    this.unsynced = false;
    this.status = TxStatus.Idle;
    this.settingsChanged = false;
    this.failedGroup = -1;
    this.groupEnds = [];
    this.fresh = true;
    const socket = server.socket;
    socket.on('data', this.onServerData);
    socket.on('end', this.onServerEnd);
    socket.on('close', this.onServerEnd);
    socket.on('error', this.onServerError);
    socket.resume();
  }

  private unlink(): PooledServer {
    const server = this.server!;
    const socket = server.socket;
    socket.off('data', this.onServerData);
    socket.off('end', this.onServerEnd);
    socket.off('close', this.onServerEnd);
    socket.off('error', this.onServerError);
    socket.off('drain', this.resumeClient);
    this.heldBack = false;
    this.client.off('drain', this.resumeServer);
    // Not paused: the pool parks it (and listens) in this turn, or pauses it itself.
    this.server = undefined;
    this.o.holding.server = undefined;
    return server;
  }

  private readonly resumeServer = (): void => {
    this.server?.socket.resume();
  };

  private serverGone = false;

  private readonly onServerData = (chunk: Buffer): void => {
    const server = this.server;
    if (!server || this.done) return;
    // Messages kept from the client are cut out: `pieces` gathers what goes, `next` is where it resumes.
    let pieces: Buffer[] | undefined;
    let next = 0;
    try {
      this.fromServer.walk(chunk, (m) => {
        const code = m.code;
        if (code === B.ReadyForQuery) {
          this.pending = Math.max(0, this.pending - 1);
          if (this.failedGroup === this.groupsAnswered) this.failedGroup = -1;
          this.groupsAnswered++;
          this.groupEnds.shift();
          this.status = m.first;
        } else if (code === B.ErrorResponse) {
          // With nothing asked (no request since the last answered Sync), a FATAL: the backend is going.
          if (this.pending === 0 && !this.unsynced) this.serverGone = true;
          else this.skipGroup();
        } else if (code === B.ParameterStatus) this.settingsChanged = true;
        else if (code === B.CommandComplete) {
          if (DIRTYING.test(m.head.toString('latin1', HEADER_SIZE, HEADER_SIZE + m.peeked))) this.settingsChanged = true;
        } else if (code === B.CopyInResponse) this.copyIn();
        else if (code === B.ParseComplete || code === B.CloseComplete) {
          const e = this.expected.shift();
          if (!e || e.code !== code) throw new Error(`an unexpected ${code === B.ParseComplete ? 'ParseComplete' : 'CloseComplete'}`);
          if (!e.swallow) return;
          // Its 5 bytes (a header begun in the last chunk was held back then: see below).
          pieces ??= [];
          const from = Math.max(0, m.at);
          if (from > next) pieces.push(chunk.subarray(next, from));
          next = Math.max(next, m.at + HEADER_SIZE);
        }
      });
    } catch (err) {
      this.serverGone = true;
      server.socket.destroy();
      this.finish(`the server broke the protocol: ${(err as Error).message}`, err as Error);
      return;
    }
    // A header cut by the chunk's end, of a message to keep from the client: none of it goes now.
    let end = chunk.length;
    const partial = this.fromServer.partialCode;
    const ahead = this.expected[0];
    this.withheld = ahead?.swallow === true && ahead.code === partial;
    if (this.withheld) end = Math.max(0, chunk.length - this.fromServer.partialBytes);
    if (!pieces && next === 0 && end === chunk.length) this.client.write(chunk);
    else {
      pieces ??= [];
      if (end > next) pieces.push(chunk.subarray(next, end));
      if (pieces.length > 0) this.client.write(pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces));
    }
    if (this.serverGone) {
      this.finish('the server ended the session');
      return;
    }
    if (this.pending === 0 && (this.clientEnded || this.transactionDone())) {
      if (this.clientEnded) this.finish('client closed the connection');
      else this.releaseServer();
      return;
    }
    holdBack(server.socket, this.client, this.resumeServer);
  };

  /**
   * COPY FROM STDIN started by an Execute: the backend ignores a Sync that comes during copy-in, and
   * libpq has already sent the one that ends the Execute's group. That Sync is not answered: the group
   * goes on to the client's next Sync (after CopyDone).
   */
  private copyIn(): void {
    if (this.groupEnds[0] !== Frontend.Sync) return; // a Query's COPY, or a Sync yet to come
    this.groupEnds.shift();
    this.pending--;
    this.groupsSent--;
    for (const e of this.expected) if (e.group > this.groupsAnswered) (e as { group: number }).group--;
    this.unsynced = true; // the group is open until the client's Sync after its CopyDone
  }

  /** An error: the server skips the rest of the pipeline up to Sync; what those messages assumed is undone. */
  private skipGroup(): void {
    // A simple Query's error ends its own statement only; later groups are not skipped.
    if (this.groupEnds[0] === Frontend.Sync || this.groupEnds.length === 0) this.failedGroup = this.groupsAnswered;
    const skipped: Expected[] = [];
    while (this.expected.length > 0 && this.expected[0]!.group === this.groupsAnswered) skipped.push(this.expected.shift()!);
    for (let i = skipped.length - 1; i >= 0; i--) skipped[i]!.undo?.();
  }

  /** Idle with nothing outstanding, between messages both ways: the server can go back to the pool. */
  private transactionDone(): boolean {
    return (
      this.status === TxStatus.Idle &&
      !this.unsynced &&
      this.expected.length === 0 &&
      !this.withheld &&
      this.fromClient.atBoundary &&
      this.fromServer.atBoundary
    );
  }

  private releaseServer(): void {
    const changed = this.settingsChanged;
    const server = this.unlink();
    this.o.pools.release(server, this.o.key, 'idle', changed);
    if (this.o.drain?.draining()) this.fail(SHUTTING_DOWN);
    else this.client.resume(); // if it waited for the server's drain: that server is no longer its concern
  }

  private readonly onServerEnd = (): void => {
    this.serverGone = true;
    this.finish('server closed the connection');
  };

  private readonly onServerError = (err: Error): void => {
    this.serverGone = true;
    this.finish(`error on the server connection: ${err.message}`, err);
  };

  // The end.

  /** A failure the client hears as FATAL before the close (no server, a protocol error). */
  private fail(err: Error): void {
    if (this.done) return;
    const wire =
      err instanceof WireError
        ? err
        : new WireError(SqlState.ConnectionFailure, `pg-iam-proxy could not get a server: ${err.message}`, { reason: Failure.Internal });
    if (!this.client.destroyed && !this.o.signal.aborted) this.client.write(wire.toBuffer());
    this.finish(wire.message, err instanceof WireError ? undefined : err);
  }

  private finish(reason: string, error?: Error): void {
    if (this.done) return;
    this.done = true;
    this.o.drain?.onDrain(undefined);
    this.client.off('data', this.onClientData);
    this.client.off('end', this.onClientEnd);
    this.client.off('error', this.onClientError);
    this.client.off('close', this.onClientClose);
    if (this.server) {
      const idle = !this.serverGone && this.pending === 0 && this.transactionDone();
      const changed = this.settingsChanged;
      const server = this.unlink();
      this.o.pools.release(server, this.o.key, this.serverGone ? 'gone' : idle ? 'idle' : 'busy', changed);
    }
    for (const statement of this.named.values()) this.statements.let(statement);
    this.named.clear();
    this.client.end();
    this.client.resume();
    this.resolve({ reason, error });
  }
}

/** Close of the unnamed statement. */
const CLOSE_UNNAMED = frontendMessage(Frontend.Close, Buffer.of(STATEMENT), '');

/** What a client hears when the proxy shuts down between its transactions, as from a server's shutdown. */
const SHUTTING_DOWN = new WireError(SqlState.AdminShutdown, 'terminating connection: pg-iam-proxy is shutting down', {
  reason: Failure.Shutdown,
});

/** A Bind, Describe or Close head with the string at `at` (a statement name) replaced by `name`. */
function renamedHead(head: Buffer, at: number, name: string, rest: number): Buffer {
  const end = head.indexOf(0, at);
  const out = Buffer.allocUnsafe(at + Buffer.byteLength(name) + 1 + (head.length - end - 1));
  head.copy(out, 0, 0, at);
  let to = at + out.write(name, at, 'utf8');
  out[to++] = 0;
  head.copy(out, to, end + 1);
  return lengthFor(out, rest);
}
