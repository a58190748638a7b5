// Phase 4: bytes both ways with backpressure (docs/protocol.md E1). Client to server, each chunk goes straight
// on (one read of up to 64 KiB becomes one TLS write). Server to client, TLS hands over its
// plaintext a record at a time: during a bulk transfer, those of one event-loop turn leave in one writev
// (one write per read instead of one per record). The cleanup runs once: the first side to end or
// fail decides the close reason.
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { encrypts, pointAt, reads, useUserBuffer } from '../net/user-buffer.js';
import { holdBack } from '../net/backpressure.js';

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
function relay(from: Socket, to: Socket, byTurn: boolean): void {
  const resume = () => from.resume();
  const hold = () => holdBack(from, to, resume);
  // What the stream already holds (read before the splice, not yet handed over) goes first: once reads
  // land in the relay's buffers, they would overtake it (a TLS client over a Duplex delivers its buffered
  // plaintext a tick after the reads that its resume() sets off).
  for (let chunk: Buffer | null; (chunk = from.read() as Buffer | null) !== null; ) {
    reads.stream++;
    to.write(chunk);
  }
  hold();
  if (!relayOwnBuffers(from, to, byTurn, hold)) relayStream(from, to, byTurn, hold);
  from.resume();
}

/** The public path: a Buffer per read from Node's stream machinery. */
function relayStream(from: Socket, to: Socket, byTurn: boolean, hold: () => void): void {
  let corked = false;
  const flush = () => {
    if (!corked) return; // flushed early, at the limit
    corked = false;
    to.uncork();
    hold();
  };
  from.on('data', (chunk: Buffer) => {
    reads.stream++;
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
}

/** A client's reads, one at a time, each gone into SSL_write before the next: one buffer for them all. */
const SHARED_SIZE = 64 * 1024;
let shared: Buffer | undefined;
/**
 * Between bursts a TLS socket reads into a buffer of this size: PostgreSQL flushes at most 8 KiB at a time
 * (its send buffer), one TLS record, except for a message longer than that (records up to 16 KiB, read in
 * two).
 */
const OWN = 8 * 1024;
/**
 * Idle sockets share their read buffer, a group of at most this many: a read is written on at once, so the
 * buffer is free again unless that write holds it (a client that reads slowly). Then the holder keeps it and
 * the rest of its group are pointed at a new one: a cost bounded by the group's size, paid only then.
 */
const GROUP = 64;
/**
 * Pointing a socket at another buffer leaves a small native record behind for the socket's life (Node's
 * `useUserBuffer` stacks a listener per call; user-buffer.ts): a socket moved this many times reads into a
 * buffer of its own from then on, so what it leaves stays bounded.
 */
const MAX_MOVES = 8;
interface Member {
  readonly socket: Socket;
  moves: number;
  /** Read into a buffer of its own from now on (pointed at it). */
  own(): void;
}
interface ReadGroup {
  buffer: Buffer;
  readonly members: Set<Member>;
}
let joining: ReadGroup | undefined;
/** No buffer: a socket that left its group has none of its own yet. */
const NONE = Buffer.alloc(0);

/** A group's buffer for `member` to read into next. */
function joinGroup(member: Member): ReadGroup {
  if (!joining || joining.members.size >= GROUP) joining = { buffer: Buffer.allocUnsafeSlow(OWN), members: new Set() };
  joining.members.add(member);
  return joining;
}

/** `holder`'s write holds its group's buffer: it keeps it, the others read into a new one. */
function leaveHeld(group: ReadGroup, holder: Member): void {
  group.members.delete(holder);
  if (group.members.size === 0) return;
  group.buffer = Buffer.allocUnsafeSlow(OWN);
  for (const member of group.members) {
    reads.repointed++;
    if (++member.moves < MAX_MOVES) pointAt(member.socket, group.buffer);
    else {
      group.members.delete(member);
      reads.ownForGood++;
      member.own();
    }
  }
}

/** Room a burst buffer keeps for the next read: one TLS record's plaintext (TLS caps it at 16 KiB). */
const RECORD = 16 * 1024;
/** During a burst, the records of a turn gather in one buffer of this size and leave in one write. */
const BURST = 64 * 1024;
/** Burst buffers no write holds any more, for the next burst (of any session). */
const spareBursts: Buffer[] = [];
const MAX_SPARE_BURSTS = 8;

/**
 * `from` to `to` reading into buffers the relay owns (user-buffer.ts); false when `from` cannot. A buffer is
 * used again only when no write still holds it: a write to a TLS socket that was not queued has been
 * encrypted (copied) before write() returns, and one to a TCP socket holds its bytes while
 * `writableLength` is above zero (written in part; the rest waits for the socket).
 *
 * - A plain client to a TLS server: every read goes on at once, so all clients share one buffer; a read
 *   that would be queued behind an earlier write is copied.
 * - A TLS socket (the server; a TLS client): between bursts, its group's buffer (joinGroup), shared while
 *   its writes go out at once; a write that holds it makes it this socket's own (leaveHeld). With
 *   `byTurn`, a full record (a bulk transfer) starts a burst: the next reads land one after the other in a
 *   64 KiB buffer and leave together at the end of the turn, or when it is full; a short read ends it.
 */
function relayOwnBuffers(from: Socket, to: Socket, byTurn: boolean, hold: () => void): boolean {
  if (!encrypts(from) && encrypts(to)) {
    const buffer = (shared ??= Buffer.allocUnsafeSlow(SHARED_SIZE));
    const onRead = (n: number) => {
      const bytes = buffer.subarray(0, n);
      if (to.writableLength === 0 && !to.writableCorked) to.write(bytes);
      else {
        reads.copied++;
        to.write(Buffer.from(bytes));
      }
      hold();
    };
    if (!useUserBuffer(from, buffer, onRead, () => undefined)) return false;
  } else {
    const toEncrypts = encrypts(to);
    /** Moved too often (MAX_MOVES): its own buffers for good. */
    let alone = false;
    const member: Member = {
      socket: from,
      moves: 0,
      own: () => {
        group = undefined;
        alone = true;
        buffer = Buffer.allocUnsafeSlow(OWN);
        pointAt(from, buffer); // between reads: nothing read is waiting in the group's buffer
      },
    };
    /** The idle buffer's group while this socket reads into it, else undefined (a buffer of its own). */
    let group: ReadGroup | undefined = joinGroup(member);
    let buffer: Buffer = group.buffer;
    /** Where the next read lands; bytes from `sent` to `at` are read and not yet written. */
    let at = 0;
    let sent = 0;
    /** A write may still hold bytes before `sent`: the buffer is not used from its start again. */
    let held = false;
    let burst = false;
    let flushing = false;
    const flush = () => {
      if (sent === at) return;
      const bytes = buffer.subarray(sent, at);
      sent = at;
      const queued = to.writableLength > 0 || to.writableCorked;
      to.write(bytes);
      if (toEncrypts ? queued : to.writableLength > 0) {
        if (!held) reads.held++;
        held = true;
        if (group) {
          leaveHeld(group, member);
          group = undefined;
        }
      }
      hold();
    };
    const flushLater = () => {
      flushing = false;
      flush();
    };
    const onRead = (n: number) => {
      // The group's buffer may be a new one since (another member's write held the last): the read is in it.
      if (group) buffer = group.buffer;
      at += n;
      if (burst && n >= BULK_CHUNK && buffer.length - at >= RECORD) {
        // More records are likely decrypted in this turn: they gather behind this one.
        if (!flushing) {
          flushing = true;
          setImmediate(flushLater);
        }
      } else {
        flush();
        burst = byTurn && n >= BULK_CHUNK;
      }
    };
    const next = (): Buffer => {
      if (sent < at) return buffer.subarray(at); // gathering: room for a record was checked
      if (!held) at = sent = 0;
      // A write now would wait behind what the client has not taken yet: while it is slow, this socket reads
      // into buffers of its own (a group's would be held at each read, and its group moved each time).
      const waits = to.writableLength > 0 || to.writableCorked;
      if (group) {
        if (!burst && !waits) return (buffer = group.buffer); // idle: free again (a write that held it left the group)
        group.members.delete(member);
        group = undefined;
        buffer = NONE; // the group's buffer stays the group's
      }
      if (!burst && !held && !waits && !alone) {
        if (buffer.length === BURST && spareBursts.length < MAX_SPARE_BURSTS) spareBursts.push(buffer);
        group = joinGroup(member);
        buffer = group.buffer;
        at = sent = 0;
        return buffer;
      }
      const size = burst ? BURST : OWN;
      if (buffer.length !== size || (held && buffer.length - at < RECORD)) {
        if (!held && buffer.length === BURST && spareBursts.length < MAX_SPARE_BURSTS) spareBursts.push(buffer);
        buffer = (size === BURST && spareBursts.pop()) || Buffer.allocUnsafeSlow(size);
        at = sent = 0;
        held = false;
      }
      return at === 0 ? buffer : buffer.subarray(at);
    };
    if (!useUserBuffer(from, buffer, onRead, next)) {
      group.members.delete(member);
      return false;
    }
    // The end of the stream comes after the last read: what gathers goes out before our FIN.
    from.on('end', flush);
    from.on('close', () => group?.members.delete(member));
  }
  // Reads that arrive by the stream path all the same (the hooks did not engage) are relayed as ever.
  relayStream(from, to, byTurn, hold);
  return true;
}
