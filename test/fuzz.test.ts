// Property-based fuzzing (fast-check) of the two parsers that read untrusted bytes before anyone is
// authenticated: the client's startup packets and the server's pre-auth messages. Invariants: no
// exception but a WireError escapes; invalid input makes no upstream connection and no token. The seed
// corpus in test/fuzz-corpus/ runs first, every time. (It found pg-protocol's parser looping forever on an
// ErrorResponse with an unterminated field: now refused before it reaches the parser.) Longer runs: FUZZ_RUNS=100000 npx tap build/test/fuzz.test.js
import t from 'tap';
import fc from 'fast-check';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { TLSSocket } from 'node:tls';
import { WireError } from '../src/protocol/errors.js';
import { readStartupPacket } from '../src/protocol/startup.js';
import { readBackendFrame } from '../src/protocol/backend.js';
import { loginUpstream } from '../src/upstream/auth.js';
import { Inbox } from '../src/net/inbox.js';
import { authenticateClient, ScramSecret } from '../src/proxy/scram.js';
import type { IamToken } from '../src/aws/tokens.js';
import { startTestDb } from './support/testdb.js';
import { startProxy } from './support/proxy.js';
import { startupBytes } from './support/bytes.js';

const SCALE = Number(process.env.FUZZ_RUNS ?? 1);
const runs = (n: number) => Math.max(1, Math.round(n * SCALE));
const corpus = (kind: string) => {
  const dir = fileURLToPath(new URL(`../../test/fuzz-corpus/${kind}/`, import.meta.url));
  return readdirSync(dir).map((name) => ({ name, bytes: readFileSync(dir + name) }));
};

/** Arbitrary bytes, and bytes shaped like startup packets (a plausible length, a known code, params). */
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const packetLike = fc
  .tuple(
    fc.oneof(
      fc.constant(196608),
      fc.constant(196610),
      fc.constant(80877103),
      fc.constant(80877104),
      fc.constant(80877102),
      fc.integer({ min: 0, max: 0xffffffff }),
    ),
    fc.uint8Array({ maxLength: 64 }),
    fc.integer({ min: -8, max: 80 }),
  )
  .map(([code, body, lengthDelta]) => Buffer.concat([u32(8 + body.length + lengthDelta), u32(code), Buffer.from(body)]));
const clientBytes = fc.oneof(
  fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a)),
  fc.array(packetLike, { minLength: 1, maxLength: 3 }).map((parts) => Buffer.concat(parts)),
);

/** How the proxy's startup phase will judge `bytes` (with --client-tls off): the reference walk. */
function judge(bytes: Buffer): 'invalid' | 'incomplete' | 'startup' | 'cancel' | 'tls' {
  let buf = bytes;
  const seen = new Set<string>();
  for (;;) {
    let read: ReturnType<typeof readStartupPacket>;
    try {
      read = readStartupPacket(buf);
    } catch (err) {
      if (!(err instanceof WireError)) throw err;
      return 'invalid';
    }
    if ('needed' in read) return 'incomplete';
    buf = buf.subarray(read.size);
    const kind = read.packet.kind;
    if (kind === 'startup' || kind === 'cancel') return kind;
    if (kind === 'tls-hello') return 'tls';
    if (seen.has(kind)) return 'invalid';
    seen.add(kind);
  }
}

t.test('startup parser: only WireErrors escape, sizes stay within the input', async (t) => {
  const check = (bytes: Buffer) => {
    try {
      const read = readStartupPacket(bytes);
      if ('needed' in read) return read.needed > bytes.length && read.needed <= 10_000 + 8;
      return read.size >= 0 && read.size <= bytes.length;
    } catch (err) {
      return err instanceof WireError && /^[0-9A-Z]{5}$/.test(err.code);
    }
  };
  for (const seed of corpus('startup')) t.ok(check(seed.bytes), `corpus ${seed.name}`);
  fc.assert(fc.property(clientBytes, check), { numRuns: runs(20_000) });
  t.pass(`${runs(20_000)} generated inputs`);
});

/** A fake upstream: a duplex whose reads are `serverBytes`, in random chunks. */
function fakeUpstream(serverBytes: Buffer, cuts: number[]): { socket: TLSSocket } {
  // What the proxy writes is dropped; the server's bytes are queued in their chunks, then the end.
  const socket = new Duplex({ read() {}, write: (_chunk, _e, done) => done() });
  let at = 0;
  for (const cut of [...cuts, serverBytes.length].sort((a, b) => a - b)) {
    const end = Math.min(cut, serverBytes.length);
    if (end > at) socket.push(serverBytes.subarray(at, end));
    at = Math.max(at, end);
  }
  socket.push(null);
  return { socket: socket as unknown as TLSSocket };
}

/** Whether a well-formed AuthenticationCleartextPassword comes before anything that ends the login. */
function asksPassword(bytes: Buffer): boolean {
  let buf = bytes;
  for (;;) {
    let frame: ReturnType<typeof readBackendFrame>;
    try {
      frame = readBackendFrame(buf);
    } catch {
      return false;
    }
    if (!frame) return false;
    if (frame.code === 0x52) return frame.bytes.length >= 9 && frame.bytes.readUInt32BE(5) === 3;
    if (frame.code !== 0x76 && frame.code !== 0x4e) return false; // only 'v' and notices may precede it
    buf = buf.subarray(frame.bytes.length);
  }
}

const TOKEN: IamToken = {
  value: 'token',
  scope: { host: 'h', port: 5432, region: 'us-east-1', user: 'u' },
  accessKeyId: 'AKIA',
  signer: { accessKeyId: 'AKIA' },
  signedAt: 0,
  expiresAt: 1,
};

t.test('pre-auth parser: only WireErrors escape; a token only for a well-formed password request', async (t) => {
  const check = async (serverBytes: Buffer, cuts: number[]) => {
    const { socket } = fakeUpstream(serverBytes, cuts);
    let asked = 0;
    try {
      await loginUpstream(socket, startupBytes({ user: 'u' }), { token: async () => (asked++, TOKEN) });
    } catch (err) {
      if (!(err instanceof WireError)) return false;
    }
    return asked <= 1 && (asked === 0 || asksPassword(serverBytes));
  };
  for (const seed of corpus('preauth')) t.ok(await check(seed.bytes, []), `corpus ${seed.name}`);
  const frame = fc
    .tuple(fc.constantFrom('R', 'E', 'N', 'v', 'S', 'K', 'Z', 'X'), fc.uint8Array({ maxLength: 40 }), fc.integer({ min: -4, max: 8 }))
    .map(([code, body, delta]) => Buffer.concat([Buffer.from(code), u32(4 + body.length + delta), Buffer.from(body)]));
  const withAuth = fc
    .tuple(fc.constantFrom(0, 3, 5, 10, 12, 99), fc.uint8Array({ maxLength: 8 }))
    .map(([code, rest]) => Buffer.concat([Buffer.from('R'), u32(8 + rest.length), u32(code), Buffer.from(rest)]));
  const server = fc.oneof(
    fc.uint8Array({ maxLength: 256 }).map((a) => Buffer.from(a)),
    fc.array(fc.oneof(frame, withAuth), { minLength: 1, maxLength: 6 }).map((parts) => Buffer.concat(parts)),
  );
  await fc.assert(fc.asyncProperty(server, fc.array(fc.nat({ max: 300 }), { maxLength: 4 }), check), { numRuns: runs(3_000) });
  t.pass(`${runs(3_000)} generated server replies`);
});

t.test('through a live proxy: invalid client input makes no upstream connection and no token', async (t) => {
  const db = await startTestDb();
  t.teardown(() => db.destroy());
  // The dial address counts connections and never answers: any connection is a violation here.
  let dialled = 0;
  const trap = createServer((s) => (dialled++, s.destroy()));
  trap.listen(0, '127.0.0.1');
  await once(trap, 'listening');
  t.teardown(() => trap.close());
  const proxy = await startProxy(db, {
    connectTo: `127.0.0.1:${(trap.address() as { port: number }).port}`,
    clientTls: 'off',
    startupTimeoutMs: 2_000,
  });
  t.teardown(() => proxy.close());

  const send = async (bytes: Buffer) => {
    const verdict = judge(bytes);
    if (verdict === 'startup') return true; // valid: the proxy rightly goes upstream
    const socket: Socket = connect({ host: '127.0.0.1', port: proxy.port });
    socket.on('error', () => undefined);
    socket.on('data', () => undefined);
    await once(socket, 'connect');
    socket.end(bytes);
    await once(socket, 'close');
    return dialled === 0 && proxy.signed() === 0;
  };
  for (const seed of corpus('startup')) t.ok(await send(seed.bytes), `corpus ${seed.name}: ${judge(seed.bytes)}`);
  await fc.assert(fc.asyncProperty(clientBytes, send), { numRuns: runs(300) });
  t.equal(dialled, 0, 'no upstream connection');
  t.equal(proxy.signed(), 0, 'no token');
  t.same(
    proxy.logs().filter((l) => Number(l.level) >= 50),
    [],
    'no errors logged',
  );
});

t.test('SCRAM exchange: whatever the client sends, only WireErrors escape and no wrong proof passes', async (t) => {
  const secret = ScramSecret.fromPassword('secret', Buffer.alloc(16, 7), 16);
  const message = fc.oneof(
    fc.uint8Array({ maxLength: 120 }).map((a) => Buffer.from(a)),
    fc
      .tuple(
        fc.constantFrom('SCRAM-SHA-256', 'SCRAM-SHA-256-PLUS', 'PLAIN', ''),
        fc.constantFrom('n,,', 'y,,', 'p=tls-server-end-point,,', 'x'),
        fc.string({ maxLength: 40 }),
        fc.integer({ min: -2, max: 2 }),
      )
      .map(([mech, gs2, rest, delta]) => {
        const first = Buffer.from(`${gs2}n=,r=${rest}`);
        const body = Buffer.concat([Buffer.from(`${mech}\0`), u32(first.length + delta), first]);
        return Buffer.concat([Buffer.from('p'), u32(body.length + 4), body]);
      }),
  );
  const check = async (first: Buffer, second: Buffer) => {
    const client = new Duplex({ read() {}, write: (_c, _e, done) => done() });
    const inbox = new Inbox(client);
    client.push(Buffer.concat([first, second]));
    client.push(null);
    try {
      await authenticateClient(client as unknown as Socket, inbox, 'u', secret);
      return false; // random bytes never know the password
    } catch (err) {
      return err instanceof WireError || (err as Error).name === 'InboxClosed';
    }
  };
  await fc.assert(fc.asyncProperty(message, message, check), { numRuns: runs(3_000) });
  t.pass(`${runs(3_000)} generated SCRAM exchanges`);
});
