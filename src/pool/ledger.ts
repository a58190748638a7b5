// What a pooled server owes: every request sent to it, in order, each settled by the server's own answer.
// A server goes back to its pool only when its ledger is settled (nothing owed, no pipeline open, no COPY)
// and its last ReadyForQuery said idle. When the answers stop matching what was sent, the ledger is in
// doubt: the server stays with its client and is closed when the client leaves, never lent again.
//
// The rules are PostgreSQL's (docs/architecture.md, "What a server owes"):
// - Parse, Bind and Close are answered by ParseComplete, BindComplete and CloseComplete; Describe by NoData
//   or RowDescription (after a ParameterDescription for a statement); Execute by CommandComplete,
//   EmptyQueryResponse or PortalSuspended, or it starts a COPY; Sync, Query and FunctionCall by
//   ReadyForQuery. Flush and CopyData are answered by nothing.
// - An error in the extended protocol makes the server skip every message up to the next Sync. After the
//   error of a Query, a FunctionCall or a Sync (a failed commit), only its ReadyForQuery follows.
// - In COPY FROM STDIN the server ignores Sync and Flush; CopyDone ends the copy (CommandComplete),
//   CopyFail or any other message ends it with an error. After that error an Execute's COPY skips to the
//   next Sync, a Query's is over. CopyData, CopyDone and CopyFail outside a copy are ignored.
import { BackendCode, FrontendCode } from '../protocol/constants.js';

/** How a request ended: answered as asked, run and failed, or skipped (an earlier error, ignored in a COPY). */
export type Outcome = 'answered' | 'failed' | 'skipped';

/**
 * Told once how a request ended: what sending it assumed (a statement prepared, a name dropped) is taken
 * back unless it was answered.
 */
export type Settled = (outcome: Outcome) => void;

/** A ReadyForQuery status byte: idle, in a transaction, in a failed transaction. */
export const TxStatus = { Idle: 0x49, InTransaction: 0x54, Failed: 0x45 } as const; // I T E

// A request is its frontend code and these flags, in one number.
const CODE = 0xff;
/** Sent by the proxy: its answer is kept from the client. */
const SWALLOW = 0x100;
/** CopyData went to the server between the request before this one and this one. */
const AFTER_DATA = 0x200;
/** Of a group the proxy sends on its own: while it is the oldest, everything the server says is the proxy's. */
const OWN = 0x400;

const isExtended = (code: number): boolean =>
  code === FrontendCode.Parse ||
  code === FrontendCode.Bind ||
  code === FrontendCode.Describe ||
  code === FrontendCode.Execute ||
  code === FrontendCode.Close;
const endsGroup = (code: number): boolean =>
  code === FrontendCode.Sync || code === FrontendCode.Query || code === FrontendCode.FunctionCall;
const isCopyEnd = (code: number): boolean => code === FrontendCode.CopyDone || code === FrontendCode.CopyFail;

export interface SentOptions {
  /** The proxy's own request: its answer is not the client's. */
  readonly swallow?: boolean;
  /**
   * One of a group of the proxy's own, up to its own Sync: nothing the server says while it is the oldest
   * request reaches the client (errors, ParameterStatus, rows), and it is settled as any request is.
   */
  readonly own?: boolean;
  readonly settled?: Settled | undefined;
  /**
   * A Query's: told of each of its statements' CommandComplete in turn (from 0); true keeps that one from
   * the client (a statement the proxy put among the client's).
   */
  readonly completed?: ((index: number) => boolean) | undefined;
}

export class Ledger {
  /** Requests sent and not yet answered, oldest at `head`. */
  private requests: number[] = [];
  private settles: Array<Settled | undefined> = [];
  /** The `completed` hooks of the Queries among them, and how many completions each was told. */
  private hooks: Array<{ readonly hook: (index: number) => boolean; told: number } | undefined> = [];
  private head = 0;
  /** CopyData went out since the last request. */
  private dataSinceLast = false;
  /** The last ReadyForQuery's status. */
  status: number = TxStatus.Idle;
  /** Extended-query messages went out since the last Sync, Query or FunctionCall: a pipeline is open. */
  open = false;
  /** The server is in COPY FROM STDIN, for the request at `head`. */
  copyIn = false;
  /** Why the count can no longer be trusted; undefined while it can. */
  doubt: string | undefined;
  /** An error in the extended protocol came before its Sync was sent: the server skips all up to that Sync. */
  private skipping = false;

  /** Requests not yet answered. */
  get owed(): number {
    return this.requests.length - this.head;
  }

  /**
   * Whether the transaction status the next request meets is known: `status`, with no Sync, Query or
   * FunctionCall still unanswered (one of those may end in a failed transaction). Requests of the open
   * group since cannot fail the transaction without the server skipping what follows them.
   */
  get statusKnown(): boolean {
    for (let i = this.head; i < this.requests.length; i++) if (endsGroup(this.requests[i]! & CODE)) return false;
    return true;
  }

  /** Nothing owed, nothing open, the count trusted: with an idle status, the server is between transactions. */
  get settled(): boolean {
    return this.owed === 0 && !this.open && !this.copyIn && this.doubt === undefined;
  }

  /** A message went to the server (its code); Terminate is not a request and is never passed here. */
  sent(code: number, options?: SentOptions): void {
    if (code === FrontendCode.CopyData) {
      this.dataSinceLast = true;
      return;
    }
    if (code === FrontendCode.Flush) return;
    if (this.skipping) {
      if (code !== FrontendCode.Sync) {
        options?.settled?.('skipped');
        return;
      }
      this.skipping = false;
    }
    if (endsGroup(code)) this.open = false;
    else if (isExtended(code)) this.open = true;
    // Outside a copy, with nothing before it that could start one, the server ignores a copy's end.
    else if (isCopyEnd(code) && this.owed === 0 && !this.copyIn) return;
    let request = code;
    if (options?.swallow) request |= SWALLOW;
    if (options?.own) request |= SWALLOW | OWN;
    if (this.dataSinceLast) request |= AFTER_DATA;
    this.dataSinceLast = false;
    this.requests.push(request);
    this.settles.push(options?.settled);
    this.hooks.push(options?.completed ? { hook: options.completed, told: 0 } : undefined);
  }

  /**
   * A message from the server (its code, and the first body byte: a ReadyForQuery's status). Returns true
   * when it answers a request of the proxy's and is not the client's to see.
   */
  answer(code: number, first: number): boolean {
    const head = this.head < this.requests.length ? this.requests[this.head]! : 0;
    // A Query of the proxy's own (the settings of a client lent the server): all of its answer is the proxy's.
    if ((head & (CODE | SWALLOW)) === (FrontendCode.Query | SWALLOW)) {
      if (code === BackendCode.ReadyForQuery) this.ready(first);
      else if (code === BackendCode.ErrorResponse) this.failed();
      return true;
    }
    const passed = this.settleBy(code, first);
    return (head & OWN) !== 0 || passed;
  }

  /** Settle what `code` answers; true when the answer is the proxy's. */
  private settleBy(code: number, first: number): boolean {
    switch (code) {
      case BackendCode.ParseComplete:
        return this.settle(FrontendCode.Parse, 'ParseComplete');
      case BackendCode.BindComplete:
        return this.settle(FrontendCode.Bind, 'BindComplete');
      case BackendCode.CloseComplete:
        return this.settle(FrontendCode.Close, 'CloseComplete');
      case BackendCode.NoData:
        return this.settle(FrontendCode.Describe, 'NoData');
      case BackendCode.RowDescription:
        // A Describe's answer, or the head of a Query's rows.
        return this.code(0) === FrontendCode.Describe ? this.settle(FrontendCode.Describe, 'RowDescription') : false;
      case BackendCode.CommandComplete:
      case BackendCode.EmptyQueryResponse:
      case BackendCode.PortalSuspended:
        return this.completed();
      case BackendCode.CopyInResponse:
      case BackendCode.CopyBothResponse:
        this.copyStarted(code);
        return false;
      case BackendCode.ErrorResponse:
        this.failed();
        return false;
      case BackendCode.ReadyForQuery:
        return this.ready(first);
      default:
        return false;
    }
  }

  /** The code of the request `i` places after the oldest unanswered one, or -1. */
  private code(i: number): number {
    const at = this.head + i;
    return at < this.requests.length ? this.requests[at]! & CODE : -1;
  }

  private distrust(why: string): void {
    this.doubt ??= why;
  }

  /** The oldest request was answered; a copy's end the server ignores (no copy under way) goes with it. */
  private pop(): number {
    const request = this.requests[this.head]!;
    const settled = this.settles[this.head];
    this.settles[this.head] = undefined;
    this.hooks[this.head] = undefined;
    this.head++;
    while (!this.copyIn && isCopyEnd(this.code(0))) {
      this.settles[this.head] = undefined;
      this.head++;
    }
    this.compact();
    settled?.('answered');
    return request;
  }

  /** Forget what lies before `head`. */
  private compact(): void {
    if (this.head === this.requests.length) {
      this.requests.length = 0;
      this.settles.length = 0;
      this.hooks.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.requests.length) {
      this.requests.splice(0, this.head);
      this.settles.splice(0, this.head);
      this.hooks.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Remove the request `i` places after the oldest (a Sync or copy end the server ignored). */
  private removeAt(i: number): void {
    const at = this.head + i;
    const settled = this.settles[at];
    this.requests.splice(at, 1);
    this.settles.splice(at, 1);
    this.hooks.splice(at, 1);
    settled?.('skipped');
  }

  private settle(code: number, what: string): boolean {
    if (this.code(0) !== code) {
      this.distrust(`a ${what} answered no request of its kind`);
      return false;
    }
    return (this.pop() & SWALLOW) !== 0;
  }

  private completed(): boolean {
    if (this.copyIn) this.copyDone();
    const code = this.code(0);
    if (code === FrontendCode.Execute) return (this.pop() & SWALLOW) !== 0;
    if (code === FrontendCode.Query) {
      const hook = this.hooks[this.head];
      return hook ? hook.hook(hook.told++) : false;
    }
    this.distrust('a command completed that no Execute or Query asked for');
    return false;
  }

  private copyStarted(code: number): void {
    const owner = this.code(0);
    if (code === BackendCode.CopyBothResponse) this.distrust('a replication stream (CopyBoth) started');
    else if (owner !== FrontendCode.Execute && owner !== FrontendCode.Query)
      this.distrust('a COPY started that no Execute or Query asked for');
    this.copyIn = true;
  }

  /** The copy ended well: the server read up to its CopyDone, ignoring every Sync before it. */
  private copyDone(): void {
    this.copyIn = false;
    for (;;) {
      const code = this.code(1);
      if (code === FrontendCode.Sync) this.removeAt(1);
      else {
        if (code === FrontendCode.CopyDone) this.removeAt(1);
        else this.distrust('a COPY ended without the CopyDone that ends it');
        return;
      }
    }
  }

  /**
   * The copy ended with an error: the server ignored each Sync it read in the copy. A Sync sent before any
   * CopyData was read before the data that failed; one sent after CopyData may have been read after the
   * error (then it is answered), or before: the count is in doubt.
   */
  private copyFailed(): void {
    this.copyIn = false;
    const owner = this.code(0);
    for (;;) {
      const code = this.code(1);
      if (code === -1) return;
      const afterData = (this.requests[this.head + 1]! & AFTER_DATA) !== 0;
      if (code === FrontendCode.Sync && !afterData) {
        this.removeAt(1);
        continue;
      }
      if (code === FrontendCode.Sync) this.distrust('a Sync sent among the CopyData of a COPY that failed');
      else if (isCopyEnd(code)) {
        // Read in the copy (its end) or after the error (ignored): never answered.
        if (owner === FrontendCode.Query) this.removeAt(1);
      } else if (owner === FrontendCode.Query) this.distrust('a message sent inside a COPY that failed');
      return;
    }
  }

  private failed(): void {
    if (this.copyIn) this.copyFailed();
    const code = this.code(0);
    if (code === -1) return; // nothing asked: the relay reads it as a FATAL
    if (code === FrontendCode.Query) {
      // Its statements after the failed one are not run; the one the proxy put first failed with it.
      const at = this.head;
      const settled = this.settles[at];
      this.settles[at] = undefined;
      settled?.('failed');
      return;
    }
    if (!isExtended(code)) return; // a FunctionCall's or a Sync's: its ReadyForQuery follows
    // The server skips to the next Sync: what the skipped messages assumed is undone, latest first.
    let end = this.head;
    while (end < this.requests.length && (this.requests[end]! & CODE) !== FrontendCode.Sync) end++;
    const settles = this.settles.slice(this.head, end);
    this.skipping = end === this.requests.length;
    this.head = end;
    this.compact();
    for (let i = settles.length - 1; i >= 0; i--) settles[i]?.(i === 0 ? 'failed' : 'skipped');
  }

  private ready(status: number): boolean {
    this.status = status;
    const code = this.code(0);
    if (!endsGroup(code)) {
      this.distrust('a ReadyForQuery that no Sync, Query or FunctionCall asked for');
      return false;
    }
    return (this.pop() & SWALLOW) !== 0;
  }
}
