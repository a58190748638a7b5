// The message cursor a pooled relay uses: every message seen once, with its code, length, start and first
// body byte, however the stream is cut; a length no message can have is refused.
import t from 'tap';
import { MessageCursor, type MessageStart } from '../src/protocol/framing.js';
import { Bytes } from './support/bytes.js';

const stream = Buffer.concat([
  new Bytes().cstring('SELECT 1').join('Q'),
  new Bytes().raw([0x49]).join('Z'), // ReadyForQuery 'I'
  new Bytes().join('X'), // Terminate: no body
  new Bytes().int32(1).raw(Buffer.alloc(300, 7)).join('D'),
  new Bytes().raw([0x54]).join('Z'), // 'T'
]);
const expected = [
  { code: 0x51, length: 13, start: 0, first: 0x53 },
  { code: 0x5a, length: 5, start: 14, first: 0x49 },
  { code: 0x58, length: 4, start: 20, first: -1 },
  { code: 0x44, length: 308, start: 25, first: 0 },
  { code: 0x5a, length: 5, start: 334, first: 0x54 },
];

function walk(chunks: Buffer[]) {
  const cursor = new MessageCursor();
  const seen: Array<{ code: number; length: number; start: number; first: number }> = [];
  let offset = 0;
  for (const chunk of chunks) {
    cursor.walk(chunk, (m: MessageStart) => seen.push({ code: m.code, length: m.length, start: offset + m.at, first: m.first }));
    offset += chunk.length;
  }
  return { seen, boundary: cursor.atBoundary };
}

t.test('whole, split at every offset, and byte by byte: the same messages', async (t) => {
  t.same(walk([stream]), { seen: expected, boundary: true });
  let same = 0;
  for (let i = 0; i <= stream.length; i++) {
    for (const j of [i, Math.min(stream.length, i + 1), Math.min(stream.length, i + 5), stream.length]) {
      const r = walk([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
      if (JSON.stringify(r) === JSON.stringify({ seen: expected, boundary: true })) same++;
      else t.fail(`cut at ${i} and ${j}`);
    }
  }
  t.equal(same, (stream.length + 1) * 4, 'every cut');
  t.same(walk([...stream].map((b) => Buffer.from([b]))), { seen: expected, boundary: true }, 'byte by byte');
});

t.test('mid-message: not at a boundary', async (t) => {
  t.equal(walk([stream.subarray(0, 3)]).boundary, false, 'inside a header');
  t.equal(walk([stream.subarray(0, 30)]).boundary, false, 'inside a body');
});

t.test('a length no message can have is refused', async (t) => {
  t.throws(() => new MessageCursor().walk(Buffer.from([0x51, 0, 0, 0, 3]), () => undefined), /invalid message length 3/);
  t.throws(() => new MessageCursor().walk(Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff]), () => undefined), /invalid message length/);
});
