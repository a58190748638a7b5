// Phase 4: bytes both ways with backpressure (PROTOCOL.md E1). Client to server, each chunk goes straight
// on (one read of up to 64 KiB becomes one TLS write). Server to client, TLS hands over its
// plaintext a record at a time: during a bulk transfer, those of one event-loop turn leave in one writev
// (one write per read instead of one per record). The cleanup runs once: the first side to end or
// fail decides the close reason.
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface SpliceEnd {
  /** Why the session ended, in the words a log reader wants ("client closed the connection"). */
  readonly reason: string;
  readonly error: Error | undefined;
}

/**
 * Join the client and the logged-in server. `toClient` / `toServer` are the bytes each phase already read
 * and still owes the other side; they go first. `clientEnded`: the client's FIN came before the splice
 * (behind pipelined bytes), so the server gets ours after them. Resolves when both sockets are closed.
 */
export function splice(client: Socket, server: TLSSocket, toClient: Buffer, toServer: Buffer, clientEnded = false): Promise<SpliceEnd> {
  return new Promise((resolve) => {
    let end: SpliceEnd | undefined;
    let open = 2;
    const decide = (reason: string, error?: Error) => (end ??= { reason, error });
    const closed = () => {
      if (--open === 0) resolve(end ?? { reason: 'connection closed', error: undefined });
    };
    client.on('end', () => decide('client closed the connection'));
    server.on('end', () => decide('server closed the connection'));
    client.on('error', (err) => {
      decide(`error on the client connection: ${err.message}`, err);
      server.destroy();
    });
    server.on('error', (err) => {
      decide(`error on the server connection: ${err.message}`, err);
      client.destroy();
    });
    // A side that is gone takes the other with it; a half-close alone is passed on by relay().
    client.on('close', () => {
      server.destroy();
      closed();
    });
    server.on('close', () => {
      // Let the client read what the server wrote last (e.g. a FATAL) before its socket goes. A client
      // paused for a 'drain' that will never come reads on, so it sees its EOF and closes.
      client.end();
      client.resume();
      closed();
    });
    if (toClient.length > 0) client.write(toClient);
    if (toServer.length > 0) server.write(toServer);
    if (clientEnded) {
      decide('client closed the connection');
      server.end();
    }
    relay(client, server, false);
    relay(server, client, true);
  });
}

/**
 * What a bulk transfer yields chunk after chunk: PostgreSQL flushes its 8 KiB send buffer with one
 * SSL_write, so a full buffer arrives as one 8 KiB record (larger messages, up to TLS's 16 KiB record,
 * from newer servers). A query's reply is mostly shorter.
 */
const BULK_CHUNK = 8_192;

/** At most this much waits in a corked socket for the end of the turn. */
const CORK_LIMIT = 256 * 1024;

/**
 * `from` to `to` with backpressure: `from` pauses while `to` holds more than its high-water mark, and
 * its FIN is passed on. `byTurn`: a full server buffer corks `to` for the rest of the event-loop turn,
 * so the records decrypted from one read leave in one write; a shorter chunk goes out at once (cork and a
 * turn's wait cost a small reply more than they save). A few closures per direction, no pipe() state:
 * an idle session holds little.
 */
/**
 * Backpressure: `from` pauses while `to` holds more than its high-water mark, and `resume` runs on its
 * 'drain'. A destroyed `to` keeps its unsent length but will never drain: what `from` sends now is dropped.
 */
export function holdBack(from: Socket, to: Socket, resume: () => void): void {
  if (to.writableLength > to.writableHighWaterMark && !to.destroyed) {
    from.pause();
    to.once('drain', resume);
  }
}

function relay(from: Socket, to: Socket, byTurn: boolean): void {
  let corked = false;
  const resume = () => from.resume();
  const hold = () => holdBack(from, to, resume);
  const flush = () => {
    if (!corked) return; // flushed early, at the limit
    corked = false;
    to.uncork();
    hold();
  };
  from.on('data', (chunk: Buffer) => {
    if (corked) {
      to.write(chunk);
      // A turn can read megabytes from a fast server: what waits for the flush stays bounded.
      if (to.writableLength >= CORK_LIMIT) flush();
    } else if (byTurn && chunk.length >= BULK_CHUNK) {
      // A full buffer: more are likely decrypted in this turn; they leave together.
      corked = true;
      to.cork();
      to.write(chunk);
      setImmediate(flush);
    } else {
      // Less than a full buffer (a query result, most of the time): out at once.
      to.write(chunk);
      hold();
    }
  });
  from.on('end', () => to.end());
  from.resume();
}
