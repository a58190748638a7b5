// The relay of transaction pooling: a client holds a server from its first message after ReadyForQuery
// 'I' until the server has answered everything the client sent (its ledger settled, ledger.ts) with
// ReadyForQuery 'I' again; then the server goes back to the pool. When the relay is in any doubt, the
// server stays with its client and is closed when the client leaves.
//
// Prepared statements follow the client from server to server (docs/architecture.md, "Transaction
// pooling"): its Parse of "s1" becomes a Parse of the proxy's name for that statement (one per distinct
// SQL and parameter types), its Bind and Describe of "s1" name the proxy's statement, prepared first (a
// Parse injected just before) on a server that does not have it yet. Its unnamed statement is prepared
// again on a server that holds another's. Its DEALLOCATE and DISCARD ALL act on its own statements. The
// answers to injected messages are kept from the client, matched in order by the server's ledger; what a
// message assumed (a statement prepared, a name dropped) is undone when the server skips it or it fails.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { BackendCode, HEADER_SIZE, LENGTH_SIZE, SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import type { MessageStart } from '../protocol/framing.js';
import { Frontend, FrontendStream, frontendMessage, lengthFor, readCString, STATEMENT } from '../protocol/frontend.js';
import { holdBack } from '../net/backpressure.js';
import { encrypts, useUserBuffer } from '../net/user-buffer.js';
import type { Drain } from '../relay.js';
import type { Ledger, Outcome, SentOptions, Settled } from './ledger.js';
import { idleTransactionTimeout, MAX_PREPARED_STATEMENTS, type PoolKey, type Pools } from './pool.js';
import { type PooledServer, type ServerListener, TxStatus } from './server.js';
import { ClientSettings } from './client-settings.js';
import { settingsQuery } from './params.js';
import { peekServer, ServerStream, type Verdict } from './server-stream.js';
import { splitStatements, type StatementCommand, statementCommand } from './sql.js';
import {
  closeStatement,
  DEALLOCATED,
  NEVER_PREPARED,
  SCRATCH_CLOSE,
  SCRATCH_PARSE,
  NAME_BYTES,
  scratchParse,
  STATEMENT_PREFIX,
  type Statement,
  type StatementRegistry,
} from './statements.js';

/** NEVER_PREPARED and its NUL, as a message carries them. */
const NEVER_PREPARED_BYTES = Buffer.from(`${NEVER_PREPARED}\0`, 'latin1');

/** The SQL of a statement made under a client's name (makeUnderClientName): parsed anywhere, never effective. */
const STAND_IN = `ROLLBACK TO SAVEPOINT ${NEVER_PREPARED}`;

/**
 * A statement or portal name in a client's message: its bytes as the client sent them and the key
 * PostgreSQL finds it by (its first 63 bytes), each one character per byte (latin1), and where it ends.
 */
interface Name {
  readonly raw: string;
  readonly key: string;
  readonly next: number;
}
function readName(buf: Buffer, at: number): Name | undefined {
  const end = buf.indexOf(0, at);
  if (end < 0) return undefined;
  if (end === at) return { raw: '', key: '', next: end + 1 }; // the unnamed one: most drivers' every message
  const raw = buf.toString('latin1', at, end);
  return { raw, key: end - at <= NAME_BYTES ? raw : raw.slice(0, NAME_BYTES), next: end + 1 };
}
/** A name's bytes (latin1, as readName gives them) as text, for the proxy's own words. */
const asText = (raw: string): string => Buffer.from(raw, 'latin1').toString('utf8');

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
 * LISTEN, a cursor or SQL-prepared statement that outlives the transaction, a temporary table. It is reset
 * before it is lent again.
 */
const DIRTYING_TAGS = ['SET', 'RESET', 'LISTEN', 'DISCARD', 'PREPARE', 'DECLARE', 'CREATE TABLE'];
const DIRTYING = new RegExp(`^(${DIRTYING_TAGS.join('|')})\\b`);
/** Tags after which the server has none of the proxy's prepared statements. */
const DROPPING_TAGS = ['DEALLOCATE ALL', 'DISCARD ALL'];
const DROPS_STATEMENTS = new RegExp(`^(${DROPPING_TAGS.join('|')})\0`);
/** A tag's first three bytes, as one number. */
const tagStart = (b0: number, b1: number, b2: number): number => (b0 << 16) | (b1 << 8) | b2;
/**
 * The first three bytes of every tag the relay acts on (the lists above; the client's RESET and DISCARD ALL,
 * ClientSettings.onTag, are among them): most tags (SELECT, INSERT, UPDATE, DELETE, BEGIN, COMMIT) start
 * otherwise and are passed without a string made of them.
 */
const ACTED_ON = new Set(
  [...DIRTYING_TAGS, ...DROPPING_TAGS].map((tag) => tagStart(tag.charCodeAt(0), tag.charCodeAt(1), tag.charCodeAt(2))),
);
const mayMatter = (m: MessageStart): boolean =>
  m.peeked < 3 || ACTED_ON.has(tagStart(m.head[HEADER_SIZE]!, m.head[HEADER_SIZE + 1]!, m.head[HEADER_SIZE + 2]!));

/** The most bytes of a client's kept while it waits for a server; beyond, it is not read until it has one. */
const QUEUED_LIMIT = 1024 * 1024;

export interface TransactionRelayOptions {
  readonly client: Socket;
  readonly pools: Pools;
  readonly key: PoolKey;
  /** The session ends (a shutdown): a wait for a server stops. */
  readonly signal: AbortSignal;
  /** The proxy is shutting down: the client is let go between transactions (at once if it is between). */
  readonly drain?: Drain | undefined;
  readonly holding: Holding;
  readonly toClient: Buffer;
  readonly pipelined: Buffer;
  readonly clientEnded: boolean;
  /** Reads the tracked settings the client was greeted with (ClientSettings.greetedIn), when needed. */
  readonly greeted?: (() => ReadonlyMap<string, { readonly name: string; readonly value: string }>) | undefined;
  readonly log: Logger;
}

export function relayTransactions(options: TransactionRelayOptions): Promise<TransactionEnd> {
  return new Promise((resolve) => new TransactionRelay(options, resolve).begin());
}

/** Takes back what a request assumed: `failed` when the server ran it and it failed, else it was skipped. */
type Undo = (failed: boolean) => void;

/** One Settled for a request whose outcome several assumptions wait on. */
function both(...settles: Array<Settled | undefined>): Settled | undefined {
  const all = settles.filter((s) => s !== undefined);
  if (all.length < 2) return all[0];
  return (outcome) => {
    for (const settled of all) settled(outcome);
  };
}

/** The key of what the relay assumes of a portal of the client's (a statement's key never starts with two NULs). */
const portalKey = (portal: string): string => `\0\0${portal}`;

/** The key of what the relay assumes of a statement on the held server (client names never hold a NUL). */
const serverKey = (statement: Statement): string => `\0${statement.name}`;

/** A client's unnamed statement: the Parse that made it. Its identity tells a server whose unnamed statement it holds. */
interface Unnamed {
  readonly parse: Buffer;
  /** Its SQL drops statements of the client's (DEALLOCATE, DISCARD ALL): done when a portal of it runs. */
  readonly drops?: StatementCommand | undefined;
}

class TransactionRelay implements ServerListener {
  private readonly client: Socket;
  private readonly statements: StatementRegistry;
  private readonly maxPrepared: number;
  /** The client's named statements: its names to the proxy's statements. */
  private readonly named = new Map<string, Statement>();
  /** The client's unnamed statement, if it has one. */
  private unnamed: Unnamed | undefined;
  /** What changes the server has not answered yet (see `changes`), by key. */
  private readonly unsettled = new Map<string, { count: number; group: number }>();
  /** Sync, Query and FunctionCall messages sent: the groups of requests the server answers as one. */
  private groups = 0;
  /** Client bytes behind a message held until the server answers (see `changes`). */
  private backlog: Buffer[] = [];
  /**
   * Portals bound to the client's unnamed DEALLOCATE or DISCARD ALL, and what each drops: done when an
   * Execute of that portal is sent, and undone if the server says it failed or skipped it (the portal was
   * gone: its transaction ended). A Bind that replaces the portal or its Close forgets it; so does a
   * simple Query for the unnamed portal, and the server's return to its pool for all (no portal outlives
   * its transaction). Created at the first such Bind.
   */
  private dropsOnExecute: Map<string, StatementCommand> | undefined;
  /** Binds sent that replaced or made such a portal and are not answered yet (an Execute behind one may wait). */
  private portalBinds = 0;
  /** DEALLOCATE ALL or DISCARD ALL commands sent and not yet answered (see dropAllPending). */
  private dropsAllPending = 0;
  /** Where the last Query that failed was rewritten, for its error's position. */
  private failedShifts: Shift[] | undefined;
  /** The client's names of statements it dropped lately, by the proxy's name (for errors still to come). */
  private dropped: Map<string, string> | undefined;
  /** Statements the client has more than one name for (then its errors are told with the name used). */
  private aliased: Set<Statement> | undefined;
  /** The name of the Bind or Describe being sent, for one of those; and of the last one that failed. */
  private naming: { readonly proxy: string; readonly client: string } | undefined;
  private failedNaming: { readonly proxy: string; readonly client: string } | undefined;
  /** The client's values to set again after a reset of its own, waiting for its transaction to end. */
  private again: ReturnType<ClientSettings['afterGroup']>;
  private readonly fromClient: FrontendStream;
  /** The server's messages: a CommandComplete's tag, an ErrorResponse's code and a ParameterStatus are read. */
  private readonly fromServer = new ServerStream(peekServer);
  /** The client's tracked settings: what it is told of them, and its values now. */
  private readonly settings: ClientSettings;
  /** Flow control: the client is paused until the server's socket drains. */
  private heldBack = false;
  private server: PooledServer | undefined;
  /** Client bytes that came while it held no server, waiting for one, and how many. */
  private queued: Buffer[] = [];
  private queuedBytes = 0;
  /** Stops the wait for a server when the client leaves; set while waiting. */
  private waiting: AbortController | undefined;
  /** The client's reads land in the buffer plain clients share (readIntoShared): nothing of one is kept as it is. */
  private readsShared = false;
  /** The controller of the next wait (kept while none is aborted), and whether a shutdown aborts it. */
  private waitController: AbortController | undefined;
  private hearsShutdown = false;
  /** Something the next client could see changed (a setting, a cursor...): the server is reset. */
  private settingsChanged = false;
  private clientEnded = false;
  private serverGone = false;
  /** Runs while the client holds its server with nothing owed (--idle-transaction-timeout). */
  private idleTimer: NodeJS.Timeout | undefined;
  private done = false;

  /** What the relay keeps of its options for the client's whole life: not the greeting or pipelined bytes. */
  private readonly kept: Pick<TransactionRelayOptions, 'pools' | 'key' | 'signal' | 'holding' | 'drain'>;
  /** The first bytes each way, dropped once sent: an idle client holds no buffer. */
  private start: Pick<TransactionRelayOptions, 'toClient' | 'pipelined' | 'clientEnded'> | undefined;

  constructor(
    options: TransactionRelayOptions,
    private readonly resolve: (end: TransactionEnd) => void,
  ) {
    const o = options;
    this.kept = { pools: o.pools, key: o.key, signal: o.signal, holding: o.holding, drain: o.drain };
    this.start = { toClient: o.toClient, pipelined: o.pipelined, clientEnded: o.clientEnded };
    this.client = o.client;
    this.statements = o.pools.statements;
    this.maxPrepared = o.pools.settings.maxPreparedStatements ?? MAX_PREPARED_STATEMENTS;
    this.fromClient = new FrontendStream({
      rewrite: (c, h, r, out) => this.rewrite(c, h, r, out),
      passed: (c) => this.passed(c),
      readsExecute: () => this.portalBinds > 0 || (this.dropsOnExecute !== undefined && this.dropsOnExecute.size > 0),
    });
    this.settings = new ClientSettings(o.key.params, o.greeted ?? (() => new Map()));
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
    if (!this.done) this.readIntoShared();
    // A pause made above, before the switch to the shared buffer, did not stop the socket reading (the
    // stream's pause does not): made again now that it does.
    if (!this.done) {
      if (this.fromClient.holding || this.heldBack || this.queuedBytes > QUEUED_LIMIT) this.client.pause();
      else this.client.resume();
    }
    if (this.kept.drain?.draining()) this.onDrain();
    else this.kept.drain?.onDrain(this.onDrain);
  }

  /**
   * A plain client's reads land in one buffer shared by every such client (each read is handled before
   * the next): what leaves the read is copied (bytes queued for a server or behind a held message, what
   * is written to the server). What the socket's stream already holds goes first.
   */
  private readIntoShared(): void {
    const client = this.client;
    if (encrypts(client)) return;
    // read() hands each chunk it returns to the 'data' listener (onClientData).
    while (!this.done && client.read() !== null);
    if (this.done) return;
    const buffer = (sharedClientBuffer ??= Buffer.allocUnsafeSlow(SHARED_CLIENT_BUFFER));
    this.readsShared = useUserBuffer(
      client,
      buffer,
      (n) => this.onClientData(buffer.subarray(0, n)),
      () => undefined,
    );
  }

  /** Bytes of the client's read that outlive it: a copy where the read is in the shared buffer. */
  private keep(bytes: Buffer): Buffer {
    return this.readsShared ? Buffer.from(bytes) : bytes;
  }

  /** Shutting down: a client between transactions goes now; one in a transaction at its end. */
  private readonly onDrain = (): void => {
    if (!this.server && !this.waiting) this.fail(SHUTTING_DOWN);
  };

  // The client's side.

  private readonly onClientData = (chunk: Buffer): void => {
    if (this.done) return;
    if (this.server) {
      this.forward(chunk);
      return;
    }
    if (!this.waiting) {
      // A goodbye while holding nothing: no server is needed for it.
      if (this.fromClient.atBoundary && chunk.length >= 5 && chunk[0] === Frontend.Terminate) {
        this.finish('client closed the connection');
        return;
      }
      const idle = this.kept.pools.tryAcquire(this.kept.key);
      if (idle) {
        this.link(idle);
        this.forward(chunk);
        return;
      }
      this.acquire();
    }
    // Kept until a server comes; the client is still read (its leaving is seen) up to a limit.
    this.queued.push(this.keep(chunk));
    this.queuedBytes += chunk.length;
    if (this.queuedBytes > QUEUED_LIMIT) this.client.pause();
  };

  private readonly onClientEnd = (): void => {
    this.clientEnded = true;
    if (this.waiting) this.waiting.abort(new Error('client closed the connection'));
    else this.finish('client closed the connection');
  };

  private readonly onClientError = (err: Error): void => this.finish(`error on the client connection: ${err.message}`, err);
  private readonly onClientClose = (): void => this.finish('client closed the connection');

  private readonly onShutdown = (): void => this.waiting?.abort(this.kept.signal.reason);

  /** Wait for a server, then send what the client queued meanwhile. */
  private acquire(): void {
    // One controller for every wait of the client's life until one is aborted: a controller and its
    // signal per transaction are most of what waiting costs in JavaScript.
    const waiting = (this.waitController ??= new AbortController());
    this.waiting = waiting;
    if (!this.hearsShutdown) {
      this.hearsShutdown = true;
      this.kept.signal.addEventListener('abort', this.onShutdown, { once: true });
    }
    this.kept.pools.acquire(this.kept.key, waiting.signal).then(
      (server) => {
        this.waiting = undefined;
        if (waiting.signal.aborted) this.waitController = undefined;
        if (this.done || this.clientEnded) {
          this.kept.pools.release(server, this.kept.key, 'idle', false); // untouched
          this.finish('client closed the connection while waiting for a server');
          return;
        }
        this.link(server);
        const queued = this.queued;
        this.queued = [];
        this.queuedBytes = 0;
        for (const chunk of queued) if (!this.done) this.forward(chunk);
        if (!this.done && !this.heldBack && !this.fromClient.holding) this.client.resume();
      },
      (err: Error) => {
        this.waiting = undefined;
        if (waiting.signal.aborted) this.waitController = undefined;
        this.queued = [];
        if (this.clientEnded) this.finish('client closed the connection while waiting for a server');
        else this.fail(err);
      },
    );
  }

  /** Client bytes to the held server, statement names translated; behind a held message, they wait. */
  private forward(chunk: Buffer): void {
    if (this.fromClient.holding) {
      this.backlog.push(this.keep(chunk));
      return;
    }
    const out: Buffer[] = [];
    let took: number;
    try {
      took = this.fromClient.translate(chunk, out);
    } catch (err) {
      this.broken(err);
      return;
    }
    if (took < chunk.length) this.backlog.push(this.keep(chunk.subarray(took)));
    this.toServer(out);
    this.watchIdle();
  }

  /** Holding its server with nothing owed (idle in a transaction, or mid-message): the client has so long. */
  private watchIdle(): void {
    const ms = this.kept.pools.settings.idleTransactionTimeoutMs;
    if (ms === undefined) return;
    clearTimeout(this.idleTimer);
    const ledger = this.server?.ledger;
    // In the middle of a message (the server waits for the rest), or nothing owed in an open transaction.
    const idle = !this.done && ledger !== undefined && !ledger.copyIn && (!this.fromClient.atBoundary || ledger.owed === 0);
    this.idleTimer = idle ? setTimeout(() => this.fail(idleTransactionTimeout(ms)), ms) : undefined;
  }

  /** After the server's answers: a held message may go now, then what the client sent behind it. */
  private unhold(): void {
    const out: Buffer[] = [];
    try {
      if (!this.fromClient.resume(out)) return;
    } catch (err) {
      this.broken(err);
      return;
    }
    this.toServer(out);
    const backlog = this.backlog;
    this.backlog = [];
    for (const chunk of backlog) if (!this.done) this.forward(chunk);
    if (!this.done && !this.fromClient.holding && !this.heldBack) this.client.resume();
  }

  /** The client broke the protocol: nothing more goes to the server; stopped mid-message, it is not reused. */
  private broken(err: unknown): void {
    this.fail(
      err instanceof WireError
        ? err
        : new WireError(SqlState.ProtocolViolation, `invalid message from the client: ${(err as Error).message}`, {
            reason: Failure.ClientProtocol,
          }),
    );
  }

  private toServer(out: Buffer[]): void {
    const server = this.server!;
    // One piece may be a slice of the client's read in the shared buffer: a write that waits (behind
    // another to the server) would keep it, so it goes as a copy (small: from Node's pool).
    if (out.length === 1) server.socket.write(this.keep(out[0]!));
    else if (out.length > 1) server.socket.write(Buffer.concat(out));
    if (this.fromClient.terminated) {
      this.finish('client closed the connection');
      return;
    }
    // Held for an answer: what the client sends next waits in its socket.
    if (this.fromClient.holding) this.client.pause();
    if (!this.heldBack && server.socket.writableLength > server.socket.writableHighWaterMark) {
      this.heldBack = true;
      this.client.pause();
      server.socket.once('drain', this.resumeClient);
    }
  }

  private readonly resumeClient = (): void => {
    this.heldBack = false;
    if (!this.fromClient.holding) this.client.resume();
  };

  private get ledger(): Ledger {
    return this.server!.ledger;
  }

  /** A message passed on as it is: the server owes an answer to some of them. */
  private passed(code: number): void {
    if (code === Frontend.Sync || code === Frontend.FunctionCall) this.groups++;
    this.ledger.sent(code);
  }

  /** `message` goes to the server, and the request into its ledger. */
  private send(out: Buffer[], message: Buffer, code: number, options?: SentOptions): void {
    if (code === Frontend.Query) this.groups++;
    out.push(message);
    this.ledger.sent(code, options);
  }

  // What the relay assumes before the server answers. Each assumption has a key: a client's statement name
  // ('' for its unnamed statement), or the proxy's name of a statement on the held server (after a NUL).
  // A request that changes what a key means registers the change; the server's answer settles it, and
  // anything but an answer undoes it. A message whose translation reads a key that a change sent in an
  // earlier group still leaves open is held until the server has answered: what a pipeline assumes of a
  // group's effects never runs ahead of the group's outcome.

  /** The Settled of a request that changes `key`: `undo` runs unless the server answered it. */
  private changes(key: string, undo?: Undo): Settled {
    let entry = this.unsettled.get(key);
    if (!entry) this.unsettled.set(key, (entry = { count: 0, group: 0 }));
    entry.count++;
    entry.group = this.groups;
    const counted = entry;
    return (outcome) => {
      if (outcome !== 'answered') undo?.(outcome === 'failed');
      if (--counted.count === 0 && this.unsettled.get(key) === counted) this.unsettled.delete(key);
    };
  }

  /** Whether a message reading `key` must wait for an answer (a change sent before the last group's end). */
  private mustWait(key: string): boolean {
    const entry = this.unsettled.get(key);
    return entry !== undefined && entry.group < this.groups;
  }

  /** Whether any of the client's statement names must wait (a DEALLOCATE ALL reads them all). */
  private anyMustWait(): boolean {
    for (const key of this.unsettled.keys()) if (this.mustWait(key)) return true;
    return false;
  }

  /** A message the proxy reads: statement names become the proxy's, DEALLOCATE acts on the client's own. */
  private rewrite(code: number, head: Buffer, rest: number, out: Buffer[]): boolean {
    if (code === Frontend.Parse) return this.parse(head, out);
    if (code === Frontend.Bind) return this.bind(head, rest, out);
    if (code === Frontend.Query) return this.query(head, rest, out);
    if (code === Frontend.Close) return this.close(head, out);
    if (code === Frontend.Execute) return this.execute(head, out);
    return this.describe(head, out);
  }

  /**
   * A throwaway statement under the client's own name `name` (any of that name closed first), its answers
   * kept from the client. PostgreSQL parses only a COMMIT or a ROLLBACK in a failed transaction (it refuses
   * any other Parse before it looks at the name), so the statement is a ROLLBACK TO a savepoint that does
   * not exist (its name is in the proxy's prefix): run by mistake (a SQL EXECUTE of the name), it fails and
   * changes nothing.
   */
  private makeUnderClientName(raw: string, out: Buffer[]): void {
    const name = Buffer.from(`${raw}\0`, 'latin1'); // the client's bytes, as it sent them
    this.send(out, closeStatement(name), Frontend.Close, { swallow: true });
    this.send(out, frontendMessage(Frontend.Parse, name, STAND_IN, Buffer.alloc(2)), Frontend.Parse, { swallow: true });
  }

  /** An Execute, read while a bound DEALLOCATE or DISCARD ALL waits for the Execute of its portal. */
  private execute(head: Buffer, out: Buffer[]): boolean {
    const portal = readName(head, HEADER_SIZE)?.key;
    // A Bind of this portal in an earlier group not yet answered: whether it replaced the portal decides.
    if (portal !== undefined && this.mustWait(portalKey(portal))) return false;
    const command = portal === undefined ? undefined : this.dropsOnExecute?.get(portal);
    if (!command) {
      this.send(out, head, Frontend.Execute);
      return true;
    }
    // The Execute that runs the client's DEALLOCATE or DISCARD ALL: the names are dropped from here on (a
    // Bind before it still found them), and the drops hold once it completes. What it drops is decided
    // now, as PostgreSQL looks the name up when the statement runs, not when it was parsed.
    if (command.kind === 'deallocate' ? this.mustWait(command.name) : this.anyMustWait()) return false;
    this.dropsOnExecute!.delete(portal!);
    if (command.kind !== 'deallocate') {
      this.send(out, head, Frontend.Execute, { settled: this.dropAllPending() });
      return true;
    }
    const name = command.name;
    const statement = this.named.get(name);
    if (!statement) {
      // Not one of the client's statements: the server finds one of that name (a SQL PREPARE) or says
      // there is none, in the client's words.
      this.send(out, head, Frontend.Execute);
      return true;
    }
    // The client's statement lives on the server under the proxy's name, for other clients too: the
    // DEALLOCATE runs on a statement of the client's name made for it just before.
    this.makeUnderClientName(name, out);
    const dropped = this.drop(name, statement);
    this.send(out, head, Frontend.Execute, {
      settled: (outcome) => {
        // Not run: the statement made for it may remain on the server, where the next client must not find it.
        if (outcome !== 'answered') this.settingsChanged = true;
        dropped(outcome);
      },
    });
    return true;
  }

  private parse(head: Buffer, out: Buffer[]): boolean {
    const name = readName(head, HEADER_SIZE);
    if (!name) {
      this.send(out, head, Frontend.Parse); // the server says what is wrong with it
      return true;
    }
    if (this.mustWait(name.key)) return false;
    if (name.key === '') return this.parseUnnamed(head, name.next, out);
    if (name.key.startsWith(STATEMENT_PREFIX)) {
      throw new WireError(SqlState.DuplicatePreparedStatement, `prepared statement "${asText(name.raw)}" already exists`, {
        reason: Failure.ClientProtocol,
        hint: `Names starting with ${STATEMENT_PREFIX} are the proxy's own in transaction pooling.`,
      });
    }
    if (this.named.has(name.key)) {
      // The server answers as it would (42P05, or the SQL's own error first), from a statement of that
      // name made just before; the server is reset once the client is done with it.
      this.settingsChanged = true;
      this.makeUnderClientName(name.raw, out);
      this.send(out, head, Frontend.Parse);
      return true;
    }
    const statement = this.statements.peek(head, name.next);
    if (statement && this.mustWait(serverKey(statement))) return false;
    const held = this.statements.hold(head, name.next);
    // Another name of the client's for the same statement: an error will say which name it used.
    if (held.refs > 1 && [...this.named.values()].includes(held)) (this.aliased ??= new Set()).add(held);
    this.named.set(name.key, held);
    // Skipped (an error earlier in the pipeline) or failed: the client has no such statement, as with
    // PostgreSQL itself.
    const settled = this.changes(name.key, () => {
      if (this.named.get(name.key) !== held) return;
      this.named.delete(name.key);
      this.statements.let(held);
    });
    if (this.server!.prepared.has(held) && this.dropsAllPending === 0) {
      // Already there (another client prepared the same SQL): the client's ParseComplete comes from a
      // throwaway statement, in order and skipped on an error as a real one would be. In a failed
      // transaction (or where one may have failed), the throwaway carries the client's SQL: the server
      // refuses it (25P02) as it would the client's, or accepts it if it is a COMMIT or ROLLBACK.
      this.touch(held);
      const ledger = this.server!.ledger;
      const mayHaveFailed = ledger.status === TxStatus.Failed || !ledger.statusKnown;
      this.send(out, mayHaveFailed ? scratchParse(held) : SCRATCH_PARSE, Frontend.Parse, { settled });
      this.send(out, SCRATCH_CLOSE, Frontend.Close, { swallow: true });
    } else this.prepare(held, false, out, settled);
    return true;
  }

  /**
   * The unnamed statement outlives the transaction on the server, until the next unnamed Parse or Query:
   * the server remembers whose it is. Its SQL goes as the client wrote it: a DEALLOCATE or DISCARD ALL in
   * it acts when a portal bound to it runs (execute()).
   */
  private parseUnnamed(head: Buffer, sqlAt: number, out: Buffer[]): boolean {
    const sql = mayDropStatements(head, sqlAt) ? readCString(head, sqlAt) : undefined;
    const command = (sql && statementCommand(sql.value)) || undefined;
    const server = this.server!;
    const before = { client: this.unnamed, server: server.unnamed };
    const mine: Unnamed = { parse: head, drops: command };
    this.unnamed = mine;
    server.unnamed = mine;
    const unnamed = this.changes('', (failed) => {
      // A failed Parse has dropped the old unnamed statement already; a skipped one left it.
      if (this.unnamed === mine) this.unnamed = failed ? undefined : before.client;
      if (server.unnamed === mine) server.unnamed = failed ? undefined : before.server;
    });
    this.send(out, head, Frontend.Parse, { settled: unnamed });
    return true;
  }

  private query(head: Buffer, rest: number, out: Buffer[]): boolean {
    const original = rest === 0 && mentionsDrops(head) ? head.toString('utf8', HEADER_SIZE, head.length - 1) : undefined;
    const statements = original === undefined ? undefined : splitStatements(original);
    const commands = statements?.map((statement) => statementCommand(statement.text));
    if (this.mustWait('')) return false;
    for (const command of commands ?? []) {
      if (command?.kind === 'deallocate' ? this.mustWait(command.name) : command && this.anyMustWait()) return false;
    }
    const server = this.server!;
    // The unnamed portal is the Query's now: a DEALLOCATE bound to it was never executed.
    this.dropsOnExecute?.delete('');
    // A simple Query drops the unnamed statement, even one that fails; a skipped one (an earlier error in
    // the pipeline) does not.
    let unnamed: Settled | undefined;
    if (this.unnamed || server.unnamed) {
      const before = { client: this.unnamed, server: server.unnamed };
      this.unnamed = undefined;
      server.unnamed = undefined;
      unnamed = this.changes('', (failed) => {
        if (failed) return;
        this.unnamed = before.client;
        server.unnamed = before.server;
      });
    }
    if (!commands?.some((c) => c !== undefined)) {
      this.send(out, head, Frontend.Query, { settled: unnamed });
      return true;
    }
    // The client's DEALLOCATE of one of its statements runs as DEALLOCATE of a statement made just before
    // it (whose CommandComplete is kept from the client); each drop of the client's names holds once its
    // statement's CommandComplete comes, and is undone if the Query fails before it.
    // The text is the client's, each DEALLOCATE replaced where it stood: an error's position (a syntax
    // error anywhere in it) is told back in the client's text.
    let text = '';
    let from = 0;
    const shifts: Shift[] = [];
    let completions = 0;
    const cut = new Set<number>();
    const confirm = new Map<number, Settled>();
    commands.forEach((command, i) => {
      const statement = command?.kind === 'deallocate' ? this.named.get(command.name) : undefined;
      if (statement) {
        const { start, text: own } = statements![i]!;
        const replacement = `PREPARE ${DEALLOCATED}_q AS SELECT;DEALLOCATE ${DEALLOCATED}_q`;
        text += original!.slice(from, start) + replacement;
        from = start + own.length;
        shifts.push({ after: text.length, by: replacement.length - own.length });
        cut.add(completions++);
        confirm.set(completions++, this.drop((command as { name: string }).name, statement));
        return;
      }
      const dropped = command && command.kind !== 'deallocate' ? this.dropAllPending() : undefined;
      if (dropped) confirm.set(completions, dropped);
      completions++;
    });
    text += original!.slice(from);
    const settle = (outcome: Outcome) => {
      for (const settled of confirm.values()) settled(outcome);
      confirm.clear();
    };
    this.send(out, frontendMessage(Frontend.Query, text), Frontend.Query, {
      completed: (index) => {
        confirm.get(index)?.('answered');
        confirm.delete(index);
        return cut.has(index);
      },
      settled: both(unnamed, (outcome) => {
        if (outcome === 'failed' && cut.size > 0) {
          this.settingsChanged = true; // a statement made for a DEALLOCATE may remain
          if (shifts.length > 0) this.failedShifts = shifts;
        }
        settle(outcome);
      }),
    });
    return true;
  }

  /** The client's statement `name` is dropped until the server answers; anything else takes that back. */
  private drop(name: string, statement: Statement): Settled {
    this.named.delete(name);
    this.statements.let(statement);
    // An error about it may still come (a statement that ran DEALLOCATE ALL on itself): told in the client's name.
    if ((this.dropped ??= new Map()).size >= 64) this.dropped.clear();
    this.dropped.set(statement.name, name);
    return this.changes(name, () => {
      if (this.named.has(name)) return; // prepared again since
      this.named.set(name, statement);
      this.statements.rehold(statement);
    });
  }

  /**
   * A DEALLOCATE ALL or DISCARD ALL the server has not run yet: every statement of the client's is dropped
   * until the server answers, and until then the proxy prepares a statement again (Close first) wherever
   * it is needed, rather than count on what the server has (which that command may drop before or after).
   */
  private dropAllPending(): Settled {
    this.dropsAllPending++;
    const dropped = this.dropAll();
    return (outcome) => {
      this.dropsAllPending--;
      dropped?.(outcome);
    };
  }

  /** Every statement of the client's is dropped (DEALLOCATE ALL, DISCARD ALL), until the server answers. */
  private dropAll(): Settled | undefined {
    return both(...[...this.named].map(([name, statement]) => this.drop(name, statement)));
  }

  private bind(head: Buffer, rest: number, out: Buffer[]): boolean {
    const portal = readName(head, HEADER_SIZE);
    const name = portal && readName(head, portal.next);
    if (!name) {
      this.send(out, head, Frontend.Bind);
      return true;
    }
    // A Bind of the unnamed statement whose SQL drops statements of the client's: they go when the portal runs.
    const drops = name.key === '' ? this.unnamed?.drops : undefined;
    const key = portalKey(portal.key);
    if (this.mustWait(key)) return false;
    const translated = this.statementFor(head, name, portal.next, rest, out);
    if (!translated) return false; // nothing sent: the Bind comes again
    // A Bind replaces the portal: the unnamed one always, a named one once its transaction ended. If it
    // fails (a named portal that still exists, under a savepoint rolled back to) or is skipped, the portal
    // is what it was.
    const previous = this.dropsOnExecute?.get(portal.key);
    let replaced: Settled | undefined;
    if (previous || drops) {
      const undo = this.changes(key, () => {
        if (previous) (this.dropsOnExecute ??= new Map()).set(portal.key, previous);
        else if (this.dropsOnExecute?.get(portal.key) === drops) this.dropsOnExecute!.delete(portal.key);
      });
      this.portalBinds++;
      replaced = (outcome) => {
        this.portalBinds--;
        undo(outcome);
      };
    }
    this.send(out, translated, Frontend.Bind, { settled: both(this.naming && this.nameOnFailure().settled, replaced) });
    this.dropsOnExecute?.delete(portal.key);
    if (drops) (this.dropsOnExecute ??= new Map()).set(portal.key, drops);
    return true;
  }

  private describe(head: Buffer, out: Buffer[]): boolean {
    const name = head[HEADER_SIZE] === STATEMENT ? readName(head, HEADER_SIZE + 1) : undefined;
    const translated = name ? this.statementFor(head, name, HEADER_SIZE + 1, 0, out) : head;
    if (!translated) return false;
    this.send(out, translated, Frontend.Describe, this.naming && this.nameOnFailure());
    return true;
  }

  /** A Bind or Describe naming a statement the client has two names for: if it fails, its error says this one. */
  private nameOnFailure(): SentOptions {
    const naming = this.naming!;
    this.naming = undefined;
    return {
      settled: (outcome) => {
        if (outcome === 'failed') this.failedNaming = naming;
      },
    };
  }

  /**
   * The head of a Bind or Describe that names statement `name` (at `at`): the proxy's name for a statement
   * of the client's, prepared first where the server lacks it; the unnamed statement, the client's own.
   * Undefined: it must wait for the server's answers.
   */
  private statementFor(head: Buffer, { key: name, raw, next }: Name, at: number, rest: number, out: Buffer[]): Buffer | undefined {
    if (this.mustWait(name)) return undefined;
    if (name === '') {
      this.ensureUnnamed(out);
      return head;
    }
    const statement = this.named.get(name);
    if (statement) {
      if (this.mustWait(serverKey(statement))) return undefined;
      this.ensure(statement, out);
      // Its error names it as this message does: the client has another name for it, or this one is longer
      // than the key.
      if (raw !== name || this.aliased?.has(statement)) this.naming = { proxy: statement.name, client: raw };
      return renamedHead(head, at, next, statement.nameBytes, rest);
    }
    // Never prepared by the client: the server says so in the client's words; a name that could be one of
    // the proxy's is kept from the server.
    return raw.startsWith(STATEMENT_PREFIX) ? renamedHead(head, at, next, NEVER_PREPARED_BYTES, rest) : head;
  }

  /** The server holds the client's unnamed statement, or none at all (then it says so, as it would directly). */
  private ensureUnnamed(out: Buffer[]): void {
    const server = this.server!;
    if (server.unnamed === this.unnamed) return;
    const before = server.unnamed;
    const mine = this.unnamed;
    server.unnamed = mine;
    const settled = this.changes('', (failed) => {
      if (server.unnamed === mine) server.unnamed = failed ? undefined : before;
    });
    if (mine) this.send(out, mine.parse, Frontend.Parse, { swallow: true, settled });
    else this.send(out, CLOSE_UNNAMED, Frontend.Close, { swallow: true, settled });
  }

  private close(head: Buffer, out: Buffer[]): boolean {
    const name = head[HEADER_SIZE] === STATEMENT ? readName(head, HEADER_SIZE + 1) : undefined;
    if (!name) {
      this.send(out, head, Frontend.Close); // a portal's
      // A bound DEALLOCATE closed, never executed.
      const portal = head[HEADER_SIZE] !== STATEMENT ? readName(head, HEADER_SIZE + 1) : undefined;
      if (portal) this.dropsOnExecute?.delete(portal.key);
      return true;
    }
    if (this.mustWait(name.key)) return false;
    if (name.key === '') {
      const server = this.server!;
      const before = { client: this.unnamed, server: server.unnamed };
      this.unnamed = undefined;
      server.unnamed = undefined;
      const settled = this.changes('', () => {
        this.unnamed = before.client;
        server.unnamed = before.server;
      });
      this.send(out, head, Frontend.Close, { settled });
      return true;
    }
    const statement = this.named.get(name.key);
    // The server keeps the statement for other clients; the client gets its CloseComplete in order.
    this.send(out, closeStatement(NEVER_PREPARED), Frontend.Close, { settled: statement && this.drop(name.key, statement) });
    return true;
  }

  /** The statement is prepared on the held server, or a Parse for it goes first (its answer kept). */
  private ensure(statement: Statement, out: Buffer[]): void {
    if (this.server!.prepared.has(statement) && this.dropsAllPending === 0) this.touch(statement);
    else this.prepare(statement, true, out);
  }

  private touch(statement: Statement): void {
    const prepared = this.server!.prepared;
    prepared.delete(statement);
    prepared.add(statement);
  }

  private prepare(statement: Statement, injected: boolean, out: Buffer[], settled?: Settled): void {
    const server = this.server!;
    const prepared = server.prepared;
    if (prepared.size >= this.maxPrepared) {
      // The least recently used goes (--max-prepared-statements).
      const oldest = prepared.values().next().value!;
      prepared.delete(oldest);
      const evicted = this.changes(serverKey(oldest), () => prepared.add(oldest));
      this.send(out, closeStatement(oldest.name), Frontend.Close, { swallow: true, settled: evicted });
    }
    // Where a statement the server was said to have was gone, one it is not said to have may be there.
    if (server.statementsUnsure || this.dropsAllPending > 0)
      this.send(out, closeStatement(statement.name), Frontend.Close, { swallow: true });
    // Not made (an error skipped it): the server lacks it, or, where it had it before (a DEALLOCATE ALL
    // pending, maybe skipped too), may still have it; either way a later Parse of it is sent, after a Close.
    const had = prepared.has(statement);
    prepared.add(statement);
    const made = this.changes(serverKey(statement), () => {
      prepared.delete(statement);
      if (had) server.statementsUnsure = true;
    });
    this.send(out, statement.parse, Frontend.Parse, { swallow: injected, settled: both(made, settled) });
  }

  // The server's side.

  private link(server: PooledServer): void {
    this.server = server;
    this.kept.holding.server = server;
    this.settingsChanged = false;
    // The client's tracked parameters (application_name, TimeZone...) first, where the server's differ.
    const settings = settingsQuery(this.settings.current, server.tracked, server.trackedUnknown);
    if (settings) this.setTracked(server, settings, this.settings.current);
    server.hold(this);
    server.socket.resume();
  }

  /** The proxy's own query setting the client's tracked values on `server` (its whole answer kept from the client). */
  private setTracked(server: PooledServer, query: Buffer, tracked: ReadonlyMap<string, Buffer>): void {
    server.tracked = tracked;
    server.trackedUnknown = false;
    // A Query drops the unnamed statement, the client's included (made by messages written before it):
    // its next Bind of it gets its Parse again. Skipped (an error in what the client pipelined), it does not.
    const unnamed = server.unnamed;
    server.unnamed = undefined;
    server.socket.write(query);
    server.ledger.sent(Frontend.Query, {
      swallow: true,
      settled: (outcome) => {
        if (outcome === 'answered') return;
        if (outcome === 'skipped' && server.unnamed === undefined) server.unnamed = unnamed;
        server.trackedUnknown = true;
        this.settingsChanged = true;
      },
    });
  }

  private unlink(): PooledServer {
    const server = this.server!;
    server.letGo(this);
    this.dropsOnExecute = undefined; // the server's portals end with its transaction
    if (this.heldBack) server.socket.off('drain', this.resumeClient);
    this.heldBack = false;
    this.client.off('drain', this.resumeServer);
    // Not paused: the pool parks it (and listens) in this turn, or pauses it itself.
    this.server = undefined;
    this.kept.holding.server = undefined;
    return server;
  }

  private readonly resumeServer = (): void => {
    this.server?.socket.resume();
  };

  // The server's socket tells the relay that holds it (ServerListener, server.ts).

  /** A read in the server's own buffer: whether a write to the client still holds its bytes. */
  serverRead(chunk: Buffer): boolean {
    const client = this.client;
    // A TLS client's write is encrypted as it is made (the bytes copied) unless it queues behind an
    // earlier one; a plain client's keeps the bytes while any of it is unwritten.
    const queued = client.writableLength > 0;
    this.serverData(chunk);
    return encrypts(client) ? queued : client.writableLength > 0;
  }

  serverData(chunk: Buffer): void {
    const server = this.server;
    if (!server || this.done) return;
    let out: Buffer[];
    try {
      out = this.fromServer.read(chunk, (m) => this.onServerMessage(m, server));
    } catch (err) {
      this.serverGone = true;
      server.socket.destroy();
      this.finish(`the server broke the protocol: ${(err as Error).message}`, err as Error);
      return;
    }
    if (out.length > 0) this.client.write(out.length === 1 ? out[0]! : Buffer.concat(out));
    if (this.serverGone) {
      this.finish('the server ended the session');
      return;
    }
    if (this.fromClient.holding) {
      this.unhold();
      if (this.done) return;
    }
    if (this.betweenTransactions()) {
      if (this.clientEnded) this.finish('client closed the connection');
      else this.releaseServer();
      return;
    }
    this.watchIdle();
    holdBack(server.socket, this.client, this.resumeServer);
  }

  /** What one server message means for the server's state, and for the client: passed, kept, or replaced. */
  private onServerMessage(m: MessageStart, server: PooledServer): Verdict {
    const ledger = server.ledger;
    const code = m.code;
    if (code === BackendCode.ErrorResponse) {
      // With nothing asked, a FATAL: the backend is going.
      if (ledger.owed === 0 && !ledger.open) {
        this.serverGone = true;
        return false;
      }
    }
    const cut = ledger.answer(code, m.first);
    if (cut) return true;
    // An error that names one of the proxy's statements names it as the client does; one that says it is
    // gone (a DEALLOCATE ALL where the proxy cannot see it) makes the server's forgotten, prepared again as
    // they are needed.
    const gone = code === BackendCode.ErrorResponse && errorCode(m) === SqlState.InvalidSqlStatementName;
    const shifts = code === BackendCode.ErrorResponse ? this.failedShifts : undefined;
    this.failedShifts = undefined;
    if (code === BackendCode.ErrorResponse && (this.named.size > 0 || (this.dropped?.size ?? 0) > 0 || gone || shifts)) {
      const naming = this.failedNaming;
      this.failedNaming = undefined;
      return (whole) => {
        if (gone && whole.includes(`"${STATEMENT_PREFIX}`)) {
          this.forgetStatements(server);
          server.statementsUnsure = true;
        }
        const renamed = this.ownNames(whole, naming);
        return shifts ? shiftPosition(renamed ?? whole, shifts) : renamed;
      };
    }
    if (code === BackendCode.ParameterStatus) {
      // A reported setting the client changed: the server is reset before the next client gets it.
      this.settingsChanged = true;
      return m.peeked === m.length - LENGTH_SIZE ? this.settings.onStatus(m.head.subarray(0, HEADER_SIZE + m.peeked)) : false;
    }
    if (code === BackendCode.ReadyForQuery) {
      // After a reset of the client's own: its values again, once its transaction is over (in it, a
      // ROLLBACK or an error would take them back) and nothing more of its is on the way to the server: a
      // group it pipelined behind (a BEGIN) would run first, and the SET inside its transaction.
      const again = this.settings.afterGroup(server.trackedUnknown ? new Map() : server.tracked) ?? this.again;
      this.again = undefined;
      const ledger = server.ledger;
      if (again && ledger.status === TxStatus.Idle && !ledger.open && ledger.owed === 0)
        this.setTracked(server, again.query, again.tracked);
      else this.again = again;
    } else if (code === BackendCode.CommandComplete && mayMatter(m)) {
      const tag = m.head.toString('latin1', HEADER_SIZE, HEADER_SIZE + m.peeked);
      this.settings.onTag(tag.slice(0, tag.indexOf('\0') >>> 0));
      if (DIRTYING.test(tag)) this.settingsChanged = true;
      if (DROPS_STATEMENTS.test(tag)) {
        this.forgetStatements(server);
        server.statementsUnsure = false;
        // The client's too, but for those it prepared since (their Parse still to be answered).
        for (const [name, statement] of this.named) if (!this.unsettled.has(name)) this.drop(name, statement)('answered');
      }
    }
    return false;
  }

  /** A message (whole) with each of the proxy's statement names the client has a name for, in the client's words. */
  private ownNames(whole: Buffer, naming: { readonly proxy: string; readonly client: string } | undefined): Buffer | undefined {
    const text = whole.toString('latin1', HEADER_SIZE);
    if (!text.includes(STATEMENT_PREFIX)) return undefined;
    const clientName = new Map<string, string>();
    for (const [name, statement] of this.named) clientName.set(statement.name, name);
    for (const [proxy, name] of this.dropped ?? []) if (!clientName.has(proxy)) clientName.set(proxy, name);
    if (naming) clientName.set(naming.proxy, naming.client);
    const renamed = text.replace(/"(pg_iam_proxy_\d+)"/g, (quoted, proxy: string) => {
      const name = clientName.get(proxy);
      return name === undefined ? quoted : `"${name}"`;
    });
    if (renamed === text) return undefined;
    const out = Buffer.alloc(HEADER_SIZE + Buffer.byteLength(renamed, 'latin1'));
    out[0] = whole[0]!;
    out.writeUInt32BE(out.length - 1, 1);
    out.write(renamed, HEADER_SIZE, 'latin1');
    return out;
  }

  /**
   * The server has none of the proxy's statements it had (a DEALLOCATE ALL ran): the prepared set keeps
   * only those whose Parse went after it (not answered yet: answers come in order).
   */
  private forgetStatements(server: PooledServer): void {
    for (const statement of [...server.prepared]) if (!this.unsettled.has(serverKey(statement))) server.prepared.delete(statement);
  }

  /** The server answered everything and is idle, and both streams are between messages: it can go back. */
  private betweenTransactions(): boolean {
    const ledger = this.server!.ledger;
    return ledger.settled && ledger.status === TxStatus.Idle && this.fromClient.atBoundary && this.fromServer.atBoundary;
  }

  private releaseServer(): void {
    clearTimeout(this.idleTimer);
    const changed = this.settingsChanged;
    const server = this.unlink();
    this.kept.pools.release(server, this.kept.key, 'idle', changed);
    if (this.kept.drain?.draining()) this.fail(SHUTTING_DOWN);
    else this.client.resume(); // if it waited for the server's drain: that server is no longer its concern
  }

  serverEnded(): void {
    this.serverGone = true;
    this.finish('server closed the connection');
  }

  serverFailed(err: Error): void {
    this.serverGone = true;
    this.finish(`error on the server connection: ${err.message}`, err);
  }

  // The end.

  /** A failure the client hears as FATAL before the close (no server, a protocol error). */
  private fail(err: Error): void {
    if (this.done) return;
    const wire =
      err instanceof WireError
        ? err
        : new WireError(SqlState.ConnectionFailure, `pg-iam-proxy could not get a server: ${err.message}`, { reason: Failure.Internal });
    if (!this.client.destroyed && !this.kept.signal.aborted) this.client.write(wire.toBuffer());
    this.finish(wire.message, err instanceof WireError ? undefined : err);
  }

  /**
   * The session ends. A server held with work outstanding (the client left mid-query, mid-COPY, in the
   * middle of a message, or the relay is in doubt) is cancelled and closed; one between transactions goes
   * back to the pool.
   */
  private finish(reason: string, error?: Error): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.idleTimer);
    this.kept.drain?.onDrain(undefined);
    this.waiting?.abort(new Error(reason));
    if (this.hearsShutdown) this.kept.signal.removeEventListener('abort', this.onShutdown);
    this.client.off('data', this.onClientData);
    this.client.off('end', this.onClientEnd);
    this.client.off('error', this.onClientError);
    this.client.off('close', this.onClientClose);
    if (this.server) {
      const idle = !this.serverGone && this.betweenTransactions();
      const changed = this.settingsChanged;
      const server = this.unlink();
      this.kept.pools.release(server, this.kept.key, this.serverGone ? 'gone' : idle ? 'idle' : 'busy', changed);
    }
    for (const statement of this.named.values()) this.statements.let(statement);
    this.named.clear();
    this.queued = [];
    this.client.end();
    this.client.resume();
    this.resolve({ reason, error });
  }
}

/** The buffer plain clients of transaction pooling read into, one read at a time, and its size. */
const SHARED_CLIENT_BUFFER = 64 * 1024;
let sharedClientBuffer: Buffer | undefined;

/** Close of the unnamed statement. */
const CLOSE_UNNAMED = frontendMessage(Frontend.Close, Buffer.of(STATEMENT), '');

/** What a client hears when the proxy shuts down between its transactions, as from a server's shutdown. */
const SHUTTING_DOWN = new WireError(SqlState.AdminShutdown, 'terminating connection: pg-iam-proxy is shutting down', {
  reason: Failure.Shutdown,
});

/** A rewritten Query's text: from `after` (a 0-based offset in it) on, it is `by` characters longer than the client's. */
interface Shift {
  readonly after: number;
  readonly by: number;
}

/** An ErrorResponse (whole) with its position field ('P') taken back into the client's text. */
function shiftPosition(whole: Buffer, shifts: readonly Shift[]): Buffer | undefined {
  for (let at = HEADER_SIZE; at < whole.length && whole[at] !== 0; ) {
    const end = whole.indexOf(0, at + 1);
    if (end < 0) return undefined;
    if (whole[at] === 0x50) {
      // P
      const position = Number(whole.toString('latin1', at + 1, end));
      const back = position - shifts.filter((s) => s.after < position).reduce((n, s) => n + s.by, 0);
      if (back === position) return undefined;
      return lengthed(Buffer.concat([whole.subarray(0, at + 1), Buffer.from(String(back), 'latin1'), whole.subarray(end)]));
    }
    at = end + 1;
  }
  return undefined;
}

/** A backend message with its length word set from its bytes. */
function lengthed(message: Buffer): Buffer {
  message.writeUInt32BE(message.length - 1, 1);
  return message;
}

/** Whether a Query's text may hold a DEALLOCATE or DISCARD: most do not, and are not decoded. */
function mentionsDrops(query: Buffer): boolean {
  return (
    query.includes('DEALLOCATE') ||
    query.includes('deallocate') ||
    query.includes('DISCARD') ||
    query.includes('discard') ||
    query.includes('Deallocate') ||
    query.includes('Discard')
  );
}

/** Whether the SQL at `at` starts with a D (DEALLOCATE, DISCARD) or a comment: most do not, and are not decoded. */
function mayDropStatements(message: Buffer, at: number): boolean {
  while (at < message.length && (message[at] === 0x20 || (message[at]! >= 0x09 && message[at]! <= 0x0d))) at++;
  const c = message[at]!;
  return (c | 0x20) === 0x64 || c === 0x2d || c === 0x2f; // d or D, - or /
}

/** The SQLSTATE of an ErrorResponse, from the fields the cursor peeked at (undefined if they did not reach it). */
function errorCode(m: MessageStart): string | undefined {
  const end = HEADER_SIZE + m.peeked;
  for (let at = HEADER_SIZE; at < end && m.head[at] !== 0; ) {
    const next = m.head.indexOf(0, at + 1);
    if (next < 0 || next >= end) return undefined;
    if (m.head[at] === 0x43) return m.head.toString('latin1', at + 1, next); // C
    at = next + 1;
  }
  return undefined;
}

/** A Bind or Describe head with the statement name at `at` (ending before `next`) replaced by `name` (its NUL included). */
function renamedHead(head: Buffer, at: number, next: number, name: Buffer, rest: number): Buffer {
  const out = Buffer.allocUnsafe(at + name.length + (head.length - next));
  head.copy(out, 0, 0, at);
  name.copy(out, at);
  head.copy(out, at + name.length, next);
  return lengthFor(out, rest);
}
