// Message boundaries in a stream of regular (typed) protocol messages, followed chunk by chunk without
// copying a message: only a header split across chunks is gathered, in a buffer owned by the cursor
// (pg-protocol's Parser keeps one buffer with an offset the same way). A pooled relay needs to know where
// each message starts (a Terminate to hold back, a ReadyForQuery's status); the 1:1 relay never uses it.
import { CODE_SIZE, HEADER_SIZE, LENGTH_SIZE } from './constants.js';

/** What the cursor reports of one message: its code, its length word, and where it starts in the chunk. */
export interface MessageStart {
  readonly code: number;
  /** The length word: the body and itself, not the code byte. */
  readonly length: number;
  /** Where the message's code byte is in the chunk being walked; negative when it began in an earlier chunk. */
  readonly at: number;
  /** The first body byte (a ReadyForQuery's transaction status), or -1 for an empty body. */
  readonly first: number;
  /** The header and the body's first bytes (as many as `peek` asked for the code): valid during the call only. */
  readonly head: Buffer;
  /** How many body bytes `head` holds. */
  readonly peeked: number;
}

/**
 * The most body bytes a cursor gathers of one message: enough for a CommandComplete's tag, an
 * ErrorResponse's fields up to its SQLSTATE (a localized severity, the plain one, the code), or a
 * ParameterStatus whole (a name, and a value up to PostgreSQL's 63-byte names).
 */
export const MAX_PEEK = 96;

/** A message header over this is no PostgreSQL message a proxy relays (the server's own limit is 1 GB). */
export const MAX_MESSAGE_LENGTH = 0x3fff_ffff + LENGTH_SIZE;

export class MessageCursor {
  /** Bytes of the current message (code included) not yet walked past. */
  private left = 0;
  /** A header (plus the first body bytes) that straddles chunks, and how much of it has come. */
  private readonly head: Buffer;
  private have = 0;

  /** `peek`: how many body bytes to gather of a message with this code (1 when not given; at most MAX_PEEK). */
  constructor(private readonly peek?: (code: number) => number) {
    // From the shared pool (allocUnsafe): a few bytes need no ArrayBuffer of their own per session.
    this.head = Buffer.allocUnsafe(HEADER_SIZE + (peek ? MAX_PEEK : 1));
  }
  /** Bytes walked before the current chunk, and where the message being gathered began (stream offsets). */
  private walked = 0;
  private begin = 0;

  /** Where the last walk's chunk began in the stream. */
  private chunkStart = 0;

  /**
   * Where, in the last chunk walked, the message begins whose header (and peeked bytes) that chunk cut:
   * negative when it began in an earlier chunk; undefined when the chunk ended between messages or inside
   * a body already reported.
   */
  get partialAt(): number | undefined {
    return this.have > 0 ? this.begin - this.chunkStart : undefined;
  }

  /** True between messages: nothing of a message is pending. */
  get atBoundary(): boolean {
    return this.left === 0 && this.have === 0;
  }

  /**
   * Walk `chunk`, calling `each` once for every message whose header (and first body byte) completes in
   * it. Throws on a length word no protocol message can have: the stream is not what it claims to be.
   */
  walk(chunk: Buffer, each: (message: MessageStart) => void): void {
    let at = 0;
    this.chunkStart = this.walked;
    while (at < chunk.length) {
      if (this.left > 0) {
        const skip = Math.min(this.left, chunk.length - at);
        this.left -= skip;
        at += skip;
        continue;
      }
      if (this.have === 0) this.begin = this.walked + at;
      // Gather code + length, then the first body byte(s) if the message has a body.
      let want = HEADER_SIZE;
      if (this.have >= HEADER_SIZE) {
        const body = this.head.readUInt32BE(CODE_SIZE) - LENGTH_SIZE;
        want += Math.min(body, this.peek ? Math.min(MAX_PEEK, Math.max(1, this.peek(this.head[0]!))) : 1);
      }
      const take = Math.min(want - this.have, chunk.length - at);
      chunk.copy(this.head, this.have, at, at + take);
      this.have += take;
      at += take;
      if (this.have < HEADER_SIZE) break;
      const length = this.head.readUInt32BE(CODE_SIZE);
      if (length < LENGTH_SIZE || length > MAX_MESSAGE_LENGTH) throw new Error(`invalid message length ${length}`);
      const hasBody = length > LENGTH_SIZE;
      if (hasBody && this.have === HEADER_SIZE) continue; // its first body bytes come next (or in the next chunk)
      if (this.have < want) break; // more of the body to peek at, in the next chunk
      each({
        code: this.head[0]!,
        length,
        at: this.begin - this.walked,
        first: hasBody ? this.head[HEADER_SIZE]! : -1,
        head: this.head,
        peeked: this.have - HEADER_SIZE,
      });
      // What is left of the message after the bytes gathered into the header.
      this.left = CODE_SIZE + length - this.have;
      this.have = 0;
    }
    this.walked += chunk.length;
  }
}
