// A pooled server's messages on their way to the client, message by message, with some kept back (answers
// to the proxy's own requests) or replaced (a setting the client must see as its own). Nothing is copied
// when nothing is kept: the chunk goes on as it came. A message whose header a chunk cuts is held back
// until it is known whether it goes (its first bytes live in the cursor's own buffer meanwhile).
import { BackendCode, CODE_SIZE } from '../protocol/constants.js';
import { MAX_PEEK, type MessageStart, MessageCursor } from '../protocol/framing.js';

/** How much of each server message the pooled relays read: a CommandComplete's tag, an ErrorResponse's code, a ParameterStatus whole. */
export const peekServer = (code: number): number =>
  code === BackendCode.CommandComplete ? 16 : code === BackendCode.ErrorResponse ? 40 : code === BackendCode.ParameterStatus ? MAX_PEEK : 1;

/**
 * What becomes of one message: passed (false), kept from the client (true), replaced by these bytes, or
 * gathered whole and handed to this function, whose answer goes in its place (undefined: as it was).
 */
export type Verdict = boolean | Buffer | ((whole: Buffer) => Buffer | undefined);

export class ServerStream {
  private readonly cursor: MessageCursor;
  /** Bytes of a message kept from the client that are still to come. */
  private cutRest = 0;
  /** A message being gathered whole: its pieces so far, and what to do with it. */
  private gathering: { pieces: Buffer[]; done: (whole: Buffer) => Buffer | undefined } | undefined;

  constructor(peek: (code: number) => number) {
    this.cursor = new MessageCursor(peek);
  }

  /** Between messages, nothing held back. */
  get atBoundary(): boolean {
    return this.cutRest === 0 && this.cursor.atBoundary && this.cursor.partialAt === undefined;
  }

  /**
   * Walk `chunk`, asking `each` about every message; returns what goes to the client. Throws on a length
   * word no message can have (the server is not speaking the protocol).
   */
  read(chunk: Buffer, each: (m: MessageStart) => Verdict): Buffer[] {
    const out: Buffer[] = [];
    let from = 0;
    if (this.cutRest > 0) {
      from = Math.min(this.cutRest, chunk.length);
      this.cutRest -= from;
      this.gather(chunk.subarray(0, from), out);
    }
    this.cursor.walk(chunk, (m) => {
      const verdict = each(m);
      // Begun in an earlier chunk: its first bytes were held back there (below); they go if it does.
      const earlier = m.at < 0 ? Buffer.from(m.head.subarray(0, -m.at)) : undefined;
      if (verdict === false) {
        if (earlier) out.push(earlier);
        return;
      }
      if (m.at > from) out.push(chunk.subarray(from, m.at));
      if (Buffer.isBuffer(verdict)) out.push(verdict);
      const end = m.at + CODE_SIZE + m.length;
      this.cutRest = Math.max(0, end - chunk.length);
      const start = Math.max(0, m.at);
      from = Math.min(end, chunk.length);
      if (typeof verdict === 'function') {
        this.gathering = { pieces: earlier ? [earlier] : [], done: verdict };
        this.gather(chunk.subarray(start, from), out);
      }
    });
    // A message whose header this chunk cut: held back until it is known whether it goes.
    const partial = this.cursor.partialAt;
    const end = partial === undefined ? chunk.length : Math.max(from, partial);
    if (from === 0 && end === chunk.length && out.length === 0) return [chunk];
    if (end > from) out.push(chunk.subarray(from, end));
    return out;
  }

  /** More of the message being gathered; once whole, what replaces it goes out. */
  private gather(bytes: Buffer, out: Buffer[]): void {
    const gathering = this.gathering;
    if (!gathering) return;
    gathering.pieces.push(Buffer.from(bytes));
    if (this.cutRest > 0) return;
    this.gathering = undefined;
    const whole = Buffer.concat(gathering.pieces);
    out.push(gathering.done(whole) ?? whole);
  }
}
