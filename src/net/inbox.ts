import type { Duplex } from 'node:stream';

/**
 * Buffers what a socket sends while a phase reads it message by message. Reading stops once
 * `highWater` bytes wait unread, so a peer cannot make the proxy hold more than that (docs/protocol.md B11).
 * `release()` hands back every byte not consumed, for the next phase to forward first.
 */
export class Inbox {
  private buf: Buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private eof = false;
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    if (this.buf.length >= this.highWater) this.socket.pause();
    this.notify();
  };
  private readonly onEnd = () => {
    this.eof = true;
    this.notify();
  };
  private readonly onError = (err: Error) => {
    this.failure = err;
    this.notify();
  };

  constructor(
    private readonly socket: Duplex,
    private readonly highWater = 16 * 1024,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  /** The peer has closed its sending side (or the socket is gone): no more bytes will come. */
  get ended(): boolean {
    return this.eof;
  }

  /** Bytes received and not yet consumed. */
  get buffered(): Buffer {
    return this.buf;
  }

  /**
   * Resolve once at least `n` bytes are buffered. Rejects with the socket's error, or with
   * `Inbox.Closed` when the peer closes first.
   */
  async fill(n: number): Promise<void> {
    while (this.buf.length < n) {
      if (this.failure) throw this.failure;
      if (this.eof) throw new InboxClosed();
      this.socket.resume();
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** Make a pending or later `fill` reject with `err` (a timeout, a hang-up elsewhere). */
  fail(err: Error): void {
    this.failure ??= err;
    this.notify();
  }

  /** Drop the first `n` buffered bytes. */
  consume(n: number): void {
    this.buf = this.buf.subarray(n);
  }

  /** Stop listening; the socket stays paused. Returns the unconsumed bytes. */
  release(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    this.socket.pause();
    this.notify();
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/** The peer closed before sending what a phase needed. */
export class InboxClosed extends Error {
  constructor() {
    super('connection closed');
    this.name = 'InboxClosed';
  }
}
