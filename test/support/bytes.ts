// A tiny builder for expected protocol bytes, written by hand in tests (after pg-protocol's BufferList).
export class Bytes {
  private parts: Buffer[] = [];

  int32(n: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n | 0);
    this.parts.push(b);
    return this;
  }
  uint32(n: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    this.parts.push(b);
    return this;
  }
  cstring(s: string): this {
    this.parts.push(Buffer.from(s, 'utf8'), Buffer.from([0]));
    return this;
  }
  raw(b: Buffer | number[]): this {
    this.parts.push(Buffer.isBuffer(b) ? b : Buffer.from(b));
    return this;
  }
  /** Join, prefixed by the int32 length (which counts itself), and by `code` when given. */
  join(code?: string): Buffer {
    const body = Buffer.concat(this.parts);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length + 4);
    return code ? Buffer.concat([Buffer.from(code), len, body]) : Buffer.concat([len, body]);
  }
}

/** A StartupMessage for protocol `version` with these parameters. */
export function startupBytes(params: Record<string, string>, version = 196608): Buffer {
  const b = new Bytes().uint32(version);
  for (const [k, v] of Object.entries(params)) b.cstring(k).cstring(v);
  return b.raw([0]).join();
}

/** A StartupMessage with parameters in this order, repeats allowed (what a hostile client can send). */
export function startupPairs(pairs: ReadonlyArray<readonly [string, string]>, version = 196608): Buffer {
  const b = new Bytes().uint32(version);
  for (const [k, v] of pairs) b.cstring(k).cstring(v);
  return b.raw([0]).join();
}

export const sslRequest = () => new Bytes().uint32(80877103).join();
export const gssencRequest = () => new Bytes().uint32(80877104).join();
export const cancelRequest = (pid: number, key: Buffer) => new Bytes().uint32(80877102).int32(pid).raw(key).join();
