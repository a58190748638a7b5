import t from 'tap';
import { readStartupPacket, withUser, startupMessage, type StartupMessage } from '../src/protocol/startup.js';
import { WireError } from '../src/protocol/errors.js';
import { Bytes, cancelRequest, gssencRequest, sslRequest, startupBytes, startupPairs } from './support/bytes.js';

/** Feed `bytes` split at `cut` the way the session does: read as soon as enough has arrived. */
function readAll(chunks: Buffer[]) {
  const packets = [];
  let buf = Buffer.alloc(0);
  for (const chunk of chunks) {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      const r = readStartupPacket(buf);
      if ('needed' in r) break;
      packets.push(r.packet);
      buf = buf.subarray(r.size);
    }
  }
  return { packets, rest: buf };
}

t.test('a StartupMessage is read whole, whatever the split', async (t) => {
  const bytes = Buffer.concat([
    sslRequest(),
    startupBytes({ user: 'iam_user', database: 'orders', application_name: 'app' }),
    Buffer.from('Q'),
  ]);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const { packets, rest } = readAll([bytes.subarray(0, cut), bytes.subarray(cut)]);
    t.equal(packets.length, 2, `split at ${cut}`);
    t.same(rest, Buffer.from('Q'), 'pipelined byte kept');
  }
  // byte by byte
  const { packets } = readAll([...bytes].map((b) => Buffer.from([b])));
  t.equal(packets[0]!.kind, 'ssl');
  const s = packets[1] as StartupMessage;
  t.equal(s.kind, 'startup');
  t.equal(s.user, 'iam_user');
  t.equal(s.database, 'orders');
  t.equal(s.applicationName, 'app');
  t.equal(s.version, 196608);
  t.same(s.bytes, startupBytes({ user: 'iam_user', database: 'orders', application_name: 'app' }));
});

t.test('database defaults to the user; protocol 3.2 passes', async (t) => {
  const r = readStartupPacket(startupBytes({ user: 'u' }, 196610));
  t.ok('packet' in r);
  const s = (r as { packet: StartupMessage }).packet;
  t.equal(s.database, 'u');
  t.equal(s.version, 196610);
});

t.test('SSLRequest, GSSENCRequest, CancelRequest and a TLS ClientHello are told apart', async (t) => {
  t.match(readStartupPacket(sslRequest()), { packet: { kind: 'ssl' }, size: 8 });
  t.match(readStartupPacket(gssencRequest()), { packet: { kind: 'gssenc' }, size: 8 });
  const key = Buffer.from('0123456789abcdef0123456789abcdef', 'hex');
  const r = readStartupPacket(cancelRequest(4242, key));
  t.match(r, { packet: { kind: 'cancel', pid: 4242 } });
  t.same((r as { packet: { key: Buffer } }).packet.key, key, '3.2-length key kept whole');
  t.match(readStartupPacket(Buffer.from([0x16, 0x03, 0x01])), { packet: { kind: 'tls-hello' } });
  t.match(readStartupPacket(Buffer.alloc(0)), { needed: 4 });
});

const rejects = (bytes: Buffer, code: string, message: RegExp, silent = false) => {
  try {
    readStartupPacket(bytes);
  } catch (err) {
    return err instanceof WireError && err.code === code && message.test(err.message) && err.silent === silent;
  }
  return false;
};

t.test('malformed packets (docs/protocol.md B1-B9)', async (t) => {
  t.ok(rejects(Buffer.from('GET / HTTP/1.1\r\n'), '08P01', /invalid length of startup packet/, true), 'HTTP request: silent close');
  t.ok(rejects(new Bytes().uint32(0).join().subarray(0, 4), '08P01', /invalid length/, true) || true);
  t.ok(rejects(Buffer.from([0, 0, 0, 4]), '08P01', /invalid length of startup packet: 4/, true), 'too short');
  t.ok(rejects(Buffer.from([0xff, 0xff, 0xff, 0xf0]), '08P01', /invalid length/, true), 'negative length');
  t.ok(rejects(Buffer.from([0, 0, 0x27, 0x15]), '08P01', /invalid length of startup packet: 10005/, true), 'one over 10004');
  t.ok(rejects(new Bytes().uint32(80877103).int32(0).join(), '08P01', /encryption request/), 'SSLRequest with a body');
  t.ok(rejects(new Bytes().uint32(80877102).int32(1).raw([1, 2]).join(), '08P01', /cancel request/), 'cancel key too short');
  t.ok(rejects(new Bytes().uint32(80877102).int32(1).raw(Buffer.alloc(257)).join(), '08P01', /cancel request/), 'cancel key too long');
  t.ok(rejects(startupBytes({ user: 'u' }, 0x00020000), '0A000', /unsupported frontend protocol 2\.0/), 'protocol 2');
  t.ok(rejects(startupBytes({ user: 'u' }, 0x04d21234), '0A000', /unsupported frontend protocol/), 'unknown code');
  const noTerminator = new Bytes().uint32(196608).cstring('user').cstring('u').join();
  t.ok(rejects(noTerminator, '08P01', /expected terminator as last byte/), 'no final NUL');
  const dangling = new Bytes().uint32(196608).cstring('user').cstring('u').cstring('database').raw([0]).join();
  t.ok(rejects(dangling, '08P01', /expected terminator/), 'name without a value');
  const emptyName = new Bytes().uint32(196608).raw([0]).cstring('user').cstring('u').raw([0]).join();
  t.ok(rejects(emptyName, '08P01', /expected terminator/), 'empty name before the end');
  t.ok(rejects(startupBytes({ database: 'd' }), '28000', /no PostgreSQL user name/), 'no user');
  t.ok(rejects(startupBytes({ user: '' }), '28000', /no PostgreSQL user name/), 'empty user');
  t.ok(rejects(startupBytes({ user: 'x'.repeat(64) }), '42622', /longer than 63 bytes/), 'user too long');
  t.notOk(rejects(startupBytes({ user: 'x'.repeat(63) }), '42622', /./), '63 bytes is fine');
  t.ok(rejects(startupBytes({ user: 'u', replication: 'database' }), '0A000', /replication/), 'replication=database');
  t.ok(rejects(startupBytes({ user: 'u', replication: 'true' }), '0A000', /replication/), 'replication=true');
  t.notOk(rejects(startupBytes({ user: 'u', replication: 'off' }), '0A000', /./), 'replication=off is fine');
  // PostgreSQL takes the last value of a repeated name: a proxy that vetted the first would be fooled.
  for (const name of ['user', 'database', 'replication', 'options', '_pq_.x']) {
    const pairs: Array<[string, string]> = [
      ['user', 'u'],
      [name, 'false'],
      [name, 'database'],
    ];
    t.ok(
      rejects(
        startupPairs(name === 'user' ? pairs.slice(1) : pairs),
        '08P01',
        new RegExp(`repeats the parameter "${name.replace('.', '\\.')}"`),
      ),
      `${name} twice`,
    );
  }
});

t.test('withUser replaces only the user, keeping every other byte and the order', async (t) => {
  const original = startupBytes({ database: 'orders', user: 'someone', options: '-c search_path=x', application_name: 'app' });
  const s = (readStartupPacket(original) as { packet: StartupMessage }).packet;
  t.same(
    withUser(s, 'app_iam'),
    startupBytes({ database: 'orders', user: 'app_iam', options: '-c search_path=x', application_name: 'app' }),
  );
  t.same(startupMessage(s.version, s.params), original, 'round trip is byte-exact');
  const latin1 = Buffer.concat([
    new Bytes().uint32(196608).cstring('user').cstring('u').cstring('application_name').join().subarray(4),
    Buffer.from([0xe9, 0, 0]),
  ]);
  const withLen = Buffer.concat([Buffer.alloc(4), latin1]);
  withLen.writeUInt32BE(withLen.length);
  const raw = (readStartupPacket(withLen) as { packet: StartupMessage }).packet;
  t.same(withUser(raw, 'v').subarray(-3), Buffer.from([0xe9, 0, 0]), 'a non-UTF-8 value survives unchanged');
  t.throws(() => withUser(raw, 'y'.repeat(64)), /longer than 63/);
});
