// A raw protocol connection for differential tests: the same client bytes sent to PostgreSQL directly (over
// TLS, as the test database demands) and through the proxy, every backend message kept whole (no size cap,
// unlike wire.ts's login-time reader), and a printable form of each message for failure reports.
import { once } from 'node:events';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { serialize } from 'pg-protocol';
import { startupBytes, sslRequest } from './bytes.js';
import type { TestDb } from './testdb.js';

export interface Msg {
  code: string;
  /** The whole message, header included. */
  bytes: Buffer;
}

/** What a wait ended with when no message came. */
export type Stop = 'eof' | 'timeout';

export class PgConn {
  private buf: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  ended = false;
  readonly closed: Promise<void>;
  /** The messages of the login (AuthenticationOk .. ReadyForQuery): what legitimately differs. */
  login: Msg[] = [];

  private constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.heard?.();
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.wake();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise<void>((resolve) => socket.once('close', () => resolve())).then(() => {
      this.ended = true;
      this.wake();
    });
  }

  /** A client of the proxy (plain TCP on loopback), logged in. */
  static async proxy(port: number, params: Record<string, string>, loginMs = 10_000): Promise<PgConn> {
    return PgConn.open(port).start(params, loginMs);
  }

  /** A connection to the proxy, not logged in yet (so that it can be aborted while its login waits). */
  static open(port: number): PgConn {
    const conn = new PgConn(tcpConnect({ host: '127.0.0.1', port }));
    return conn;
  }

  private aborted = false;
  /** Called whenever bytes come in (a run watches whether any of its clients still gets answers). */
  heard?: () => void;

  /** Every wait, now and later, ends at once as a 'timeout' (another client of the run already failed). */
  abort(): void {
    this.aborted = true;
    this.wake();
  }

  /** The server process ids of every direct connection made (BackendKeyData), so a crash can be placed. */
  static readonly directPids = new Set<number>();

  /** A client of the test database itself (TLS, as its pg_hba.conf demands), logged in. */
  static async direct(db: TestDb, params: Record<string, string>): Promise<PgConn> {
    const raw = tcpConnect({ host: '127.0.0.1', port: db.port });
    await once(raw, 'connect');
    raw.write(sslRequest());
    const [answer] = (await once(raw, 'data')) as [Buffer];
    if (answer[0] !== 0x53) throw new Error(`the database refused TLS: ${answer.toString('latin1')}`);
    const tls = tlsConnect({ socket: raw, ca: db.caPem, servername: db.endpoint });
    await once(tls, 'secureConnect');
    const conn = await new PgConn(tls).start(params);
    const key = conn.login.find((m) => m.code === 'K');
    if (key) PgConn.directPids.add(key.bytes.readInt32BE(5));
    return conn;
  }

  /**
   * Logs in. A wait of `loginMs` without a message fails it, unless `waitOn` says to wait on (in session mode
   * a login waits for a server while other clients still use them).
   */
  async start(params: Record<string, string>, loginMs = 10_000, waitOn?: () => boolean): Promise<PgConn> {
    if (this.socket.connecting) await once(this.socket, 'connect');
    this.write(startupBytes(params));
    for (;;) {
      const m = await this.next(loginMs);
      if (m === 'timeout' && !this.aborted && waitOn?.()) continue;
      if (typeof m === 'string') throw new Error(`login: ${m}`);
      this.login.push(m);
      if (m.code === 'E') throw new Error(`login refused: ${show(m)}`);
      if (m.code === 'R' && m.bytes.readInt32BE(5) !== 0) throw new Error(`login wants a password (${m.bytes.readInt32BE(5)})`);
      if (m.code === 'Z') return this;
    }
  }

  write(bytes: Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) resolve();
      else this.socket.write(bytes, () => resolve());
    });
  }

  /** The next message, 'eof' once the peer has closed, or 'timeout' after `ms` without one. */
  async next(ms: number): Promise<Msg | Stop> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.buf.length >= 5) {
        const size = 1 + this.buf.readUInt32BE(1);
        if (this.buf.length >= size) {
          const bytes = Buffer.from(this.buf.subarray(0, size));
          this.buf = this.buf.subarray(size);
          return { code: String.fromCharCode(bytes[0]!), bytes };
        }
      }
      if (this.ended) return 'eof';
      const left = deadline - Date.now();
      if (this.aborted) return 'timeout';
      if (left <= 0) return 'timeout';
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Messages until one whose code is in `last` (inclusive); a Stop ends the list early. */
  async until(last: string, ms: number): Promise<{ msgs: Msg[]; stop?: Stop }> {
    const msgs: Msg[] = [];
    for (;;) {
      const m = await this.next(ms);
      if (typeof m === 'string') return { msgs, stop: m };
      msgs.push(m);
      if (last.includes(m.code)) return { msgs };
    }
  }

  /** Sends one simple Query and reads up to its ReadyForQuery. */
  async query(sql: string, ms = 10_000): Promise<{ msgs: Msg[]; stop?: Stop }> {
    await this.write(serialize.query(sql));
    return this.until('Z', ms);
  }

  /** Terminate, then wait for the close. */
  async end(): Promise<void> {
    if (!this.ended) {
      await this.write(serialize.end());
      this.socket.end();
    }
    await Promise.race([this.closed, new Promise((r) => setTimeout(r, 2_000).unref())]);
    this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/** The fields of an ErrorResponse or NoticeResponse, by field code. */
export function fields(m: Msg): Record<string, string> {
  const out: Record<string, string> = {};
  let at = 5;
  while (at < m.bytes.length && m.bytes[at] !== 0) {
    const end = m.bytes.indexOf(0, at + 1);
    if (end < 0) break;
    out[String.fromCharCode(m.bytes[at]!)] = m.bytes.subarray(at + 1, end).toString('utf8');
    at = end + 1;
  }
  return out;
}

/** The values of a DataRow, as text (null as NULL, long ones shortened). */
function rowValues(m: Msg): string[] {
  const n = m.bytes.readUInt16BE(5);
  const out: string[] = [];
  let at = 7;
  for (let i = 0; i < n; i++) {
    const len = m.bytes.readInt32BE(at);
    at += 4;
    if (len < 0) out.push('NULL');
    else {
      const v = m.bytes.subarray(at, at + len).toString('utf8');
      out.push(v.length > 24 ? `${v.slice(0, 12)}…(${v.length})` : v);
      at += len;
    }
  }
  return out;
}

const cstr = (m: Msg, at = 5) => m.bytes.subarray(at, m.bytes.indexOf(0, at)).toString('utf8');

/** A short readable form of a backend message: code, then what tells it apart. */
export function show(m: Msg): string {
  switch (m.code) {
    case 'E':
    case 'N': {
      const f = fields(m);
      return `${m.code}(${f.S ?? f.V} ${f.C} ${f.M})`;
    }
    case 'D':
      return `D(${rowValues(m).join(',')})`;
    case 'C':
      return `C(${cstr(m)})`;
    case 'Z':
      return `Z(${String.fromCharCode(m.bytes[5]!)})`;
    case 'S':
      return `S(${cstr(m)}=${cstr(m, m.bytes.indexOf(0, 5) + 1)})`;
    case 'd':
      return `d(${JSON.stringify(m.bytes.subarray(5).toString('utf8').slice(0, 40))})`;
    case 'T': {
      const names: string[] = [];
      let at = 7;
      for (let i = 0; i < m.bytes.readUInt16BE(5); i++) {
        const end = m.bytes.indexOf(0, at);
        names.push(m.bytes.subarray(at, end).toString('utf8'));
        at = end + 1 + 18;
      }
      return `T(${names.join(',')})`;
    }
    default:
      return m.code;
  }
}

/**
 * An ErrorResponse or NoticeResponse without its F, L and R fields (the server's source file, line and
 * routine): which of the server's functions found an error is no client's business, and a pooler that
 * prepares a statement first may have the same error found by another (the Parse rather than the Bind
 * refusing a failed transaction). Every field a client reads must still match. Other messages as they are.
 */
function comparable(m: Msg): Buffer {
  if (m.code !== 'E' && m.code !== 'N') return m.bytes;
  const fields: Buffer[] = [];
  for (let at = 5; at < m.bytes.length && m.bytes[at] !== 0; ) {
    const end = m.bytes.indexOf(0, at);
    const type = String.fromCharCode(m.bytes[at]!);
    if (type !== 'F' && type !== 'L' && type !== 'R') fields.push(m.bytes.subarray(at, end + 1));
    at = end + 1;
  }
  return Buffer.concat([Buffer.from(m.code), ...fields]);
}

/**
 * The one difference a pooler cannot avoid (the README's Pooling section): in a failed transaction, on a
 * server that lacks the client's statement, the proxy's Parse of it is refused with 25P02, where PostgreSQL
 * checks a Bind's number of parameters (08P01) before the transaction's state. The Bind is refused either way.
 */
function failedTransactionBind(direct: Msg, proxied: Msg, failed: boolean): boolean {
  return (
    failed &&
    direct.code === 'E' &&
    proxied.code === 'E' &&
    fields(direct).C === '08P01' &&
    /^bind message (supplies|has) /.test(fields(direct).M ?? '') &&
    fields(proxied).C === '25P02'
  );
}

/**
 * Equal bytes (errors and notices: comparable()); else where the two lists part, shown. `failed`: the
 * transaction had failed before the first message (the last ReadyForQuery said E).
 */
export function firstDifference(a: Msg[], b: Msg[], failed = false): string | undefined {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x && y && (x.bytes.equals(y.bytes) || comparable(x).equals(comparable(y)) || failedTransactionBind(x, y, failed))) {
      if (x.code === 'Z') failed = x.bytes[5] === 0x45;
      continue;
    }
    const around = (l: Msg[]) =>
      l
        .slice(Math.max(0, i - 3), i + 3)
        .map(show)
        .join(' ');
    return `message ${i}: direct ${x ? show(x) : '(none)'}, proxied ${y ? show(y) : '(none)'}\n  direct:  …${around(a)}\n  proxied: …${around(b)}`;
  }
  return undefined;
}
