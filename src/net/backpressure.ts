// Flow control shared by every relay: the 1:1 splice and both pooled relays.
import type { Socket } from 'node:net';

/**
 * Backpressure: `from` pauses while `to` holds more than its high-water mark, and `resume` runs on its
 * 'drain', once however often this is asked meanwhile (a paused TLS socket goes on decrypting the records
 * it has, each a read that asks again). A destroyed `to` keeps its unsent length but will never drain:
 * what `from` sends now is dropped.
 */
export function holdBack(from: Socket, to: Socket, resume: () => void): void {
  if (to.writableLength > to.writableHighWaterMark && !to.destroyed && !to.listeners('drain').includes(resume)) {
    from.pause();
    to.once('drain', resume);
  }
}
