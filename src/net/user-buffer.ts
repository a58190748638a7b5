// Reads into buffers the relay owns: Node's `onread` option, which the public API offers only
// to a socket it constructs, set on sockets that already exist (the client accepted by the server, the
// TLS socket over the upstream connection). Node's stream path allocates an ArrayBuffer per read (per
// TLS record) and pushes it through the Readable machinery; here each read lands in a buffer that is
// used again, and one callback hands over its length.
//
// The hooks are Node internals, checked rather than assumed: the symbols the `net.Socket` constructor
// sets for `onread` are found on a probe socket by their descriptions, and a socket's handle must have
// `useUserBuffer`. When either is missing (or PG_IAM_PROXY_USER_BUFFERS=off), the relay reads the public
// way; a 'data' listener stays attached either way, so a read that arrives by the stream path is relayed
// (and counted) all the same.
import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

interface Hooks {
  readonly buffer: symbol;
  readonly callback: symbol;
  readonly generator: symbol;
}

/** Which path reads relayed bytes, and why when it is the public one. */
export type ReadPath = { readonly kind: 'user-buffer' } | { readonly kind: 'stream'; readonly why: string };

let hooks: Hooks | undefined;
let path: ReadPath | undefined;

/** Find the constructor's `onread` slots on a probe socket that is never connected. */
function detect(): ReadPath {
  if (process.env.PG_IAM_PROXY_USER_BUFFERS === 'off') return { kind: 'stream', why: 'PG_IAM_PROXY_USER_BUFFERS=off' };
  const probe = Buffer.alloc(1);
  const generator = () => probe;
  const callback = () => false;
  // @types/node 20 declares `onread` for net.connect() only; the constructor reads it all the same.
  const socket = new Socket({ onread: { buffer: generator, callback } } as ConstructorParameters<typeof Socket>[0]);
  const slots = socket as unknown as Record<symbol, unknown>;
  const by = (name: string) => Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
  const buffer = by('kBuffer');
  const cb = by('kBufferCb');
  const gen = by('kBufferGen');
  socket.destroy();
  // The constructor's own slots, holding what was given: the generator and the callback answer as ours do.
  const works = (b: symbol, c: symbol, g: symbol) =>
    slots[b] === true && (slots[g] as () => Buffer)() === probe && (slots[c] as (n: number, b: Buffer) => unknown)(0, probe) === false;
  /* c8 ignore next 3 -- found on every supported line (20, 22, 24, 26); proxy-user-buffer.test.ts fails if not */
  if (!buffer || !cb || !gen || !works(buffer, cb, gen)) {
    return { kind: 'stream', why: "this Node's net.Socket keeps its onread hooks elsewhere" };
  }
  hooks = { buffer, callback: cb, generator: gen };
  return { kind: 'user-buffer' };
}

/** The read path of this process, detected once. */
export function readPath(): ReadPath {
  path ??= detect();
  return path;
}

/** Detect again (PG_IAM_PROXY_USER_BUFFERS read anew): the tests take both paths in one process. */
export function detectReadPath(): ReadPath {
  hooks = undefined;
  path = detect();
  return path;
}

/**
 * Since start: reads delivered by each path; buffers given up because a write still held them; reads
 * copied because a write was queued before them (or, for a pooled server, because no relay took the read
 * at once: it went on through the socket's stream); sockets pointed at a new idle buffer because a write
 * held their group's, and those moved so often they read into their own from then on (the tests read these).
 */
export const reads = { userBuffer: 0, stream: 0, held: 0, copied: 0, repointed: 0, ownForGood: 0 };

interface Handle {
  useUserBuffer?: (buffer: Uint8Array) => void;
}

/**
 * Have `socket` read into `first`: `onRead(n)` gets each read's length (the bytes are at the start of the
 * buffer last handed over; it returns false to stop reading until the socket is resumed), then `next()`
 * names the buffer for the following read (undefined: the same one). False when the hooks or this
 * socket's handle do not allow it: the socket reads the public way.
 */
export function useUserBuffer(socket: Socket, first: Buffer, onRead: (n: number) => unknown, next: () => Buffer | undefined): boolean {
  if (readPath().kind !== 'user-buffer') return false;
  const h = hooks as Hooks;
  const handle = (socket as unknown as { _handle: Handle | null })._handle;
  if (typeof handle?.useUserBuffer !== 'function') return false;
  const slots = socket as unknown as Record<symbol, unknown>;
  slots[h.callback] = (n: number) => {
    reads.userBuffer++;
    return onRead(n) !== false;
  };
  slots[h.generator] = next;
  slots[h.buffer] = first;
  handle.useUserBuffer(first);
  return true;
}

/**
 * Point `socket` (set up by useUserBuffer) at `buffer` for its next read. Each call leaves a small native
 * listener on the socket's handle for its life (Node's useUserBuffer pushes one): callers bound how often.
 */
export function pointAt(socket: Socket, buffer: Buffer): void {
  (socket as unknown as Record<symbol, unknown>)[(hooks as Hooks).buffer] = buffer;
  (socket as unknown as { _handle: Required<Handle> | null })._handle?.useUserBuffer(buffer);
}

/** A socket whose writes are encrypted as they are made: the bytes are copied by SSL_write, not kept. */
export const encrypts = (socket: Socket): boolean => socket instanceof TLSSocket;
