// A socket stand-in for relays tested in process: what is pushed to it is "received" (and delivered on a
// turn of the event loop); what the relay writes to it is kept.
import { Duplex } from 'node:stream';

export function socketStandIn() {
  const written: Buffer[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, done) {
      written.push(chunk);
      done();
    },
    final(done) {
      done();
    },
  });
  const turn = () => new Promise((r) => setImmediate(r));
  return {
    socket,
    written: () => Buffer.concat(written),
    clear: () => void written.splice(0),
    receive: async (b: Uint8Array) => (socket.push(b), turn()),
    turn,
  };
}
