// The client's stream in transaction pooling, message by message, for a relay that must rename prepared
// statements on the way (a client's statement "s1" lives on whichever server it lands on under a name
// the proxy chose). Only Parse, Bind, Describe, Close and the start of a Query are read: a Parse, Describe
// or Close whole, a Bind up to its statement name (its parameters, possibly large, stream through
// uncopied), a Query's first QUERY_HEAD bytes (enough to tell a DEALLOCATE). Every other message passes as
// a slice of the chunk it came in, consecutive ones as one slice; nothing is copied that is not read.
import { CODE_SIZE, FrontendCode, HEADER_SIZE, LENGTH_SIZE } from './constants.js';
import { MAX_MESSAGE_LENGTH } from './framing.js';

/** The frontend codes, as the rest of the proxy names them (constants.ts). */
export const Frontend = FrontendCode;

/** Describe and Close name a statement ('S') or a portal ('P'). */
export const STATEMENT = 0x53;

/**
 * The most of a Bind, Describe or Close gathered to be rewritten (its names). A Parse is gathered whole,
 * however long, as the server itself reads it: its statement is prepared again on other servers.
 */
export const MAX_GATHERED = 16 * 1024 * 1024;

/** The bytes of a Query's body read before the rest streams on: a whole DEALLOCATE or DISCARD fits. */
export const QUERY_HEAD = 1024;

/** What the relay does with the messages the stream reads. */
export interface FrontendHandler {
  /**
   * A Parse, Describe or Close (whole), the head of a Bind (up to and including its statement name), or
   * of a Query (its first QUERY_HEAD bytes at most).
   * `head` starts with the code and the message's length word; `rest`: the bytes of the message that
   * follow it and will stream on as they are. The handler pushes onto `out` what goes to the server
   * instead (the head itself when nothing changes), with injected messages before or after it, and any
   * replacement head's length word set with `lengthFor`. Returns false to hold the message (nothing
   * pushed): the stream stops before it, and `resume` offers it again.
   */
  rewrite(code: number, head: Buffer, rest: number, out: Buffer[]): boolean | undefined;
  /** A message passed on as it is (its code: Sync, Query, Execute, CopyData...). */
  passed(code: number): void;
  /**
   * Whether the next Execute is read whole and handed to `rewrite` (to learn which portal it runs) rather
   * than passed: asked at each Execute, so the hot path stays a slice while nobody needs its portal.
   */
  readsExecute?(): boolean;
}

export class FrontendStream {
  /** Bytes of the current message still to pass through uncopied. */
  private left = 0;
  /** Header bytes of the current message gathered so far (code + length). */
  // From the shared pool (allocUnsafe): a few bytes need no ArrayBuffer of their own per client.
  private readonly header = Buffer.allocUnsafe(HEADER_SIZE);
  private have = 0;
  /** A message being gathered (Parse, Bind, Describe, Close), in pieces until it is complete. */
  private gathering: Buffer[] | undefined;
  private gathered = 0;
  private length = 0;
  /** NULs in a Bind's body gathered so far: its head ends at the second. */
  private nuls = 0;
  /** The client sent Terminate: nothing after it is read. */
  terminated = false;
  /** A message the handler held: offered again by `resume`. */
  private held: { readonly head: Buffer; readonly rest: number } | undefined;

  constructor(private readonly handler: FrontendHandler) {}

  /** True between messages. */
  get atBoundary(): boolean {
    return this.left === 0 && this.have === 0 && this.gathering === undefined && this.held === undefined;
  }

  /** Whether the handler holds a message: `translate` takes nothing until `resume` succeeds. */
  get holding(): boolean {
    return this.held !== undefined;
  }

  /** Offer the held message again; true once it is taken (nothing is held). */
  resume(out: Buffer[]): boolean {
    const held = this.held;
    if (!held) return true;
    if (this.handler.rewrite(held.head[0]!, held.head, held.rest, out) === false) return false;
    this.held = undefined;
    this.left = held.rest;
    return true;
  }

  /**
   * Walk `chunk`, pushing onto `out` what goes to the server: slices of the chunk, rewritten heads, and
   * injected messages. Stops at a Terminate (not passed on), or after a message the handler holds: returns
   * how many bytes of the chunk it took (the rest is for after `resume`). Throws on a length word no
   * message can have, or a Bind, Describe or Close over MAX_GATHERED.
   */
  translate(chunk: Buffer, out: Buffer[]): number {
    if (this.held) return 0;
    let at = 0;
    /** Start of the run of bytes passed as they are; -1 while a message to rewrite is gathered. */
    let run = this.gathering || (this.have > 0 && this.reads(this.header[0]!)) ? -1 : 0;
    const flush = (to: number) => {
      if (run >= 0 && to > run) out.push(chunk.subarray(run, to));
    };
    while (at < chunk.length && !this.terminated) {
      if (this.left > 0) {
        const skip = Math.min(this.left, chunk.length - at);
        this.left -= skip;
        at += skip;
        continue;
      }
      if (this.gathering) {
        at = this.gather(chunk, at, out);
        if (this.held) return at;
        if (!this.gathering) run = at;
        continue;
      }
      if (this.have === 0) {
        const code = chunk[at]!;
        if (code === Frontend.Terminate) {
          flush(at);
          run = -1;
          this.terminated = true;
          break;
        }
        if (this.reads(code)) {
          flush(at);
          run = -1;
        }
      }
      const take = Math.min(HEADER_SIZE - this.have, chunk.length - at);
      chunk.copy(this.header, this.have, at, at + take);
      this.have += take;
      at += take;
      if (this.have < HEADER_SIZE) break;
      const code = this.header[0]!;
      const length = this.header.readUInt32BE(CODE_SIZE);
      if (length < LENGTH_SIZE || length > MAX_MESSAGE_LENGTH) throw new Error(`invalid message length ${length}`);
      this.have = 0;
      if (this.reads(code)) {
        this.gathering = [Buffer.from(this.header)];
        this.gathered = HEADER_SIZE;
        this.nuls = 0;
        this.length = length;
        if (length === LENGTH_SIZE) {
          this.complete(out);
          if (this.held) return at;
          run = at;
        }
        continue;
      }
      this.handler.passed(code);
      this.left = length - LENGTH_SIZE;
    }
    if (!this.terminated) flush(chunk.length);
    return chunk.length;
  }

  /** Whether a message of `code` is gathered for the handler's `rewrite` (else passed as it is). */
  private reads(code: number): boolean {
    return isRewritten(code) || (code === Frontend.Execute && this.handler.readsExecute?.() === true);
  }

  /** Take bytes of the message being gathered; hand it over once it has what the handler needs. */
  private gather(chunk: Buffer, at: number, out: Buffer[]): number {
    const pieces = this.gathering!;
    const total = CODE_SIZE + this.length;
    let want = Math.min(total - this.gathered, chunk.length - at);
    let headDone = false;
    const code = pieces[0]![0];
    if (code === Frontend.Query) {
      const head = HEADER_SIZE + Math.min(QUERY_HEAD, this.length - LENGTH_SIZE);
      if (this.gathered + want >= head) {
        want = head - this.gathered;
        headDone = true;
      }
    } else if (code === Frontend.Bind) {
      // A Bind's head ends after its second string (portal, statement): count NULs in the new bytes only.
      for (let i = at; i < at + want; i++) {
        if (chunk[i] === 0 && ++this.nuls === 2) {
          want = i - at + 1;
          headDone = true;
          break;
        }
      }
    }
    if (code !== Frontend.Parse && this.gathered + want > HEADER_SIZE + MAX_GATHERED) {
      throw new Error(`a ${String.fromCharCode(pieces[0]![0]!)} message too long to rewrite (over ${MAX_GATHERED} bytes)`);
    }
    pieces.push(chunk.subarray(at, at + want));
    this.gathered += want;
    at += want;
    if (headDone || this.gathered === total) this.complete(out);
    // Keep what was taken from this chunk: the chunk itself may be reused once the handler returns.
    else pieces[pieces.length - 1] = Buffer.from(pieces[pieces.length - 1]!);
    return at;
  }

  private complete(out: Buffer[]): void {
    const head = Buffer.concat(this.gathering!);
    const rest = CODE_SIZE + this.length - this.gathered;
    this.gathering = undefined;
    if (this.handler.rewrite(head[0]!, head, rest, out) === false) this.held = { head, rest };
    else this.left = rest;
  }
}

const isRewritten = (code: number): boolean =>
  code === Frontend.Parse || code === Frontend.Bind || code === Frontend.Describe || code === Frontend.Close || code === Frontend.Query;

/** A NUL-terminated string at `at`, and where the byte after its NUL is; undefined if unterminated. */
export function readCString(buf: Buffer, at: number): { value: string; next: number } | undefined {
  const end = buf.indexOf(0, at);
  if (end < 0) return undefined;
  return { value: buf.toString('utf8', at, end), next: end + 1 };
}

/** Set a rewritten head's length word: its own bytes after the code, plus `rest` bytes to follow. */
export function lengthFor(head: Buffer, rest: number): Buffer {
  head.writeUInt32BE(head.length - CODE_SIZE + rest, CODE_SIZE);
  return head;
}

/** A message of `code` whose body is these NUL-terminated strings (and raw bytes). */
export function frontendMessage(code: number, ...parts: ReadonlyArray<string | Buffer>): Buffer {
  const bodies = parts.map((p) => (typeof p === 'string' ? Buffer.from(`${p}\0`, 'utf8') : p));
  const out = Buffer.allocUnsafe(HEADER_SIZE + bodies.reduce((n, b) => n + b.length, 0));
  out[0] = code;
  let at = HEADER_SIZE;
  for (const b of bodies) at += b.copy(out, at);
  return lengthFor(out, 0);
}
