// A simple Query on a logged-in server, read to its ReadyForQuery: the pool's reset and check between
// clients, doctor's look at the server's settings.
import type { Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import { type BackendFrame, decodeError, readBackendFrame } from '../protocol/backend.js';
import { BackendCode, HEADER_SIZE } from '../protocol/constants.js';
import { Inbox } from '../net/inbox.js';

export interface QueryOutcome {
  /** The ReadyForQuery status byte (I, T, E). */
  readonly status: number;
  /** The first ErrorResponse's message, if the query failed. */
  readonly error: string | undefined;
}

/**
 * Send `sql` and read messages until ReadyForQuery, each shown to `each` on the way (DataRow,
 * ParameterStatus...). Rejects when no answer comes within `timeoutMs`, or the server says more after it.
 */
export async function simpleQuery(
  socket: Socket,
  /** The SQL, or whole Query messages (`queries` of them, sent in one write: the outcome is the last's). */
  sql: string | Buffer,
  timeoutMs: number,
  each?: (frame: BackendFrame) => void,
  queries = 1,
): Promise<QueryOutcome> {
  const inbox = new Inbox(socket, 64 * 1024);
  const timer = setTimeout(
    () =>
      inbox.fail(
        new Error(`no answer to ${typeof sql === 'string' ? JSON.stringify(sql) : "the proxy's query"} within ${timeoutMs / 1000} s`),
      ),
    timeoutMs,
  );
  try {
    socket.write(typeof sql === 'string' ? serialize.query(sql) : sql);
    let error: string | undefined;
    for (;;) {
      let frame = readBackendFrame(inbox.buffered);
      while (!frame) {
        await inbox.fill(inbox.buffered.length + 1);
        frame = readBackendFrame(inbox.buffered);
      }
      inbox.consume(frame.bytes.length);
      if (frame.code === BackendCode.ErrorResponse) error ??= decodeError(frame).message;
      else if (frame.code === BackendCode.ReadyForQuery && --queries > 0) continue;
      else if (frame.code === BackendCode.ReadyForQuery) {
        if (inbox.buffered.length > 0) throw new Error('the server sent more after ReadyForQuery');
        return { status: frame.bytes[HEADER_SIZE]!, error };
      } else each?.(frame);
    }
  } finally {
    clearTimeout(timer);
    inbox.release();
  }
}
