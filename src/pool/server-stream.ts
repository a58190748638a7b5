// A pooled server's messages on their way to the client, message by message, with some kept back (answers
// to the proxy's own requests) or replaced (a setting the client must see as its own). Nothing is copied
// when nothing is kept: the chunk goes on as it came. A message whose header a chunk cuts is held back
// until it is known whether it goes (its first bytes live in the cursor's own buffer meanwhile).
import { BackendCode as B, CODE_SIZE } from '../protocol/constants.js';
import { MAX_PEEK, type MessageStart, MessageCursor } from '../protocol/framing.js';

/** How much of each server message the pooled relays read: a CommandComplete's tag, an ErrorResponse's code, a ParameterStatus whole. */
export const peekServer = (code: number): number =>
  code === B.CommandComplete ? 16 : code === B.ErrorResponse ? 40 : code === B.ParameterStatus ? MAX_PEEK : 1;

/** What becomes of one message: passed (false), kept from the client (true), or replaced by these bytes. */
export type Verdict = boolean | Buffer;

export class ServerStream {
  private readonly cursor: MessageCursor;
  /** Bytes of a message kept from the client that are still to come. */
  private cutRest = 0;

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
    }
    this.cursor.walk(chunk, (m) => {
      const verdict = each(m);
      // Begun in an earlier chunk: its first bytes were held back there (below); they go if it does.
      if (m.at < 0 && verdict === false) out.push(Buffer.from(m.head.subarray(0, -m.at)));
      if (verdict === false) return;
      if (m.at > from) out.push(chunk.subarray(from, m.at));
      if (verdict !== true) out.push(verdict);
      const end = m.at + CODE_SIZE + m.length;
      this.cutRest = Math.max(0, end - chunk.length);
      from = Math.min(end, chunk.length);
    });
    // A message whose header this chunk cut: held back until it is known whether it goes.
    const partial = this.cursor.partialAt;
    const end = partial === undefined ? chunk.length : Math.max(from, partial);
    if (from === 0 && end === chunk.length && out.length === 0) return [chunk];
    if (end > from) out.push(chunk.subarray(from, end));
    return out;
  }
}
