// A raw protocol client for tests that need bytes pg and psql would never send.
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { decodeError, readBackendFrame } from '../../src/protocol/backend.js';
import { Bytes, startupBytes } from './bytes.js';
import type { TestDb } from './testdb.js';

export interface Message {
  code: string;
  bytes: Buffer;
}

export class WireClient {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  readonly closed: Promise<void>;
  ended = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on('error', () => undefined);
    // Not events.once: it rejects on 'error', and a reset is a close like any other here.
    this.closed = new Promise<void>((resolve) => socket.once('close', () => resolve())).then(() => {
      this.ended = true;
      this.wake();
    });
  }

  static async connect(port: number): Promise<WireClient> {
    const socket = connect({ host: '127.0.0.1', port, noDelay: true });
    await once(socket, 'connect');
    return new WireClient(socket);
  }

  /** Speak over a socket made elsewhere (a TLS connection). */
  static over(socket: Socket): WireClient {
    return new WireClient(socket);
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Write one byte at a time, each its own TCP segment as far as the OS allows. */
  async trickle(bytes: Buffer): Promise<void> {
    for (const b of bytes) {
      await new Promise<void>((r) => this.socket.write(Buffer.from([b]), () => r()));
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Exactly `n` raw bytes (e.g. the answer to SSLRequest). */
  async bytes(n: number): Promise<Buffer> {
    while (this.buf.length < n) await this.more();
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** The next backend message, or undefined once the server has closed. */
  async message(): Promise<Message | undefined> {
    for (;;) {
      const frame = readBackendFrame(this.buf);
      if (frame) {
        this.buf = this.buf.subarray(frame.bytes.length);
        return { code: String.fromCharCode(frame.code), bytes: frame.bytes };
      }
      if (this.ended) return undefined;
      await this.more();
    }
  }

  /** Messages until ReadyForQuery or an ErrorResponse (inclusive), or the close. */
  async untilReady(): Promise<Message[]> {
    const out: Message[] = [];
    for (;;) {
      const m = await this.message();
      if (!m) return out;
      out.push(m);
      if (m.code === 'Z' || m.code === 'E') return out;
    }
  }

  /** Everything sent until the server closes. */
  async rest(): Promise<Buffer> {
    await this.closed;
    return this.buf;
  }

  close(): void {
    this.socket.destroy();
  }

  private more(): Promise<void> {
    if (this.ended) return Promise.reject(new Error('connection closed'));
    return new Promise((r) => this.waiters.push(r));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }
}

export const errorOf = (m: Message | undefined) => (m && m.code === 'E' ? decodeError({ code: 0x45, bytes: m.bytes }) : undefined);

/**
 * A raw protocol reader for a query of one text column: counts the DataRows and hashes their values as
 * they come, and waits for the n-th ReadyForQuery; an ErrorResponse goes to `onError`. Pausing `socket`
 * makes a client that stops reading.
 */
export function rowReader(socket: Socket, onError: (text: string) => void) {
  const hash = createHash('sha256');
  let rows = 0;
  let ready = 0;
  let pending = Buffer.alloc(0);
  const waiters: Array<() => void> = [];
  socket.on('data', (chunk: Buffer) => {
    let buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (buf.length >= 5 && buf.length >= 1 + buf.readUInt32BE(1)) {
      const end = 1 + buf.readUInt32BE(1);
      const code = String.fromCharCode(buf[0]!);
      if (code === 'D') {
        rows++;
        hash.update(buf.subarray(11, end)); // one column: int16 count, int32 length, then the value
      } else if (code === 'Z') {
        ready++;
        for (const wake of waiters.splice(0)) wake();
      } else if (code === 'E') onError(`server error: ${buf.subarray(5, end).toString('latin1')}`);
      buf = buf.subarray(end);
    }
    pending = Buffer.from(buf);
  });
  return {
    rows: () => rows,
    digest: () => hash.digest('hex'),
    readyFor: async (n: number) => {
      while (ready < n) await new Promise<void>((wake) => waiters.push(wake));
    },
  };
}

/**
 * A client that asks for `rows` rows of 1 kB and stops reading: resolves once the backend waits in
 * ClientWrite (each turn asks the database once: no sleep). `finish` reads on and asserts every row and
 * the database's own digest of them, in order, then says goodbye.
 */
export async function stalledReader(
  t: { fail: (text: string) => void; equal: (a: unknown, b: unknown, what: string) => void },
  db: Pick<TestDb, 'admin'>,
  port: number,
  app: string,
  rows: number,
): Promise<{ finish: () => Promise<void> }> {
  const query = `SELECT repeat(md5(i::text), 32) FROM generate_series(1, ${rows}) i`;
  const socket = connect({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  const reader = rowReader(socket, (text) => t.fail(text));
  socket.write(startupBytes({ user: 'iam_user', database: 'orders', application_name: app }));
  await reader.readyFor(1);
  socket.write(new Bytes().cstring(query).join('Q'));
  socket.pause();
  for (;;) {
    const state = await db.admin(`SELECT wait_event FROM pg_stat_activity WHERE application_name = '${app}' AND state = 'active'`);
    if (state === 'ClientWrite') break;
  }
  return {
    finish: async () => {
      socket.resume();
      await reader.readyFor(2);
      t.equal(reader.rows(), rows, 'every row');
      const expected = await db.admin(
        `SELECT encode(sha256(convert_to(string_agg(repeat(md5(i::text), 32), '' ORDER BY i), 'UTF8')), 'hex') FROM generate_series(1, ${rows}) i`,
      );
      t.equal(reader.digest(), expected, 'every byte, in order');
      socket.end(new Bytes().join('X'));
      await once(socket, 'close');
    },
  };
}
