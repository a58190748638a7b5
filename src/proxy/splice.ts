// Phase 4: bytes both ways with backpressure (PROTOCOL.md E1). Client to server, Node's pipe() moves each
// chunk straight on (one read of up to 64 KiB becomes one TLS write). Server to client, TLS hands over its
// plaintext one record (16 KiB at most) at a time: those of one event-loop turn leave in one writev
// (a bulk COPY out makes a quarter of the write calls). The cleanup runs once: the first side to end or
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
 * and still owes the other side; they go first. Resolves when both sockets are closed.
 */
export function splice(client: Socket, server: TLSSocket, toClient: Buffer, toServer: Buffer): Promise<SpliceEnd> {
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
    // A side that is gone takes the other with it; a half-close alone is passed on by pipe().
    client.on('close', () => {
      server.destroy();
      closed();
    });
    server.on('close', () => {
      // Let the client read what the server wrote last (e.g. a FATAL) before its socket goes.
      client.end();
      closed();
    });
    if (toClient.length > 0) client.write(toClient);
    if (toServer.length > 0) server.write(toServer);
    client.pipe(server);
    relayByTurn(server, client);
  });
}

/**
 * `from` to `to`, corked for the rest of the event-loop turn: whatever `from` yields before the loop
 * checks again goes out in one write. A small reply (one record) is not delayed past the current turn.
 * Backpressure: `from` pauses only while the flushed bytes are still queued beyond `to`'s high-water mark.
 */
function relayByTurn(from: TLSSocket, to: Socket): void {
  let corked = false;
  const resume = () => from.resume();
  const flush = () => {
    corked = false;
    to.uncork();
    if (to.writableLength > to.writableHighWaterMark) {
      from.pause();
      to.once('drain', resume);
    }
  };
  from.on('data', (chunk: Buffer) => {
    if (!corked) {
      corked = true;
      to.cork();
      setImmediate(flush);
    }
    to.write(chunk);
  });
  from.on('end', () => to.end());
  from.resume();
}
