// What a pooled client must see of its tracked settings (params.ts), as on a direct connection. Servers
// start without them, so a reset the client runs itself (DISCARD ALL, RESET) takes a server to the
// server's defaults where PostgreSQL would take the client's own session back to its startup values. The
// ParameterStatus messages of that reset are told as PostgreSQL would tell them (the startup value, or
// nothing when the client was last told that), and the client's values are SET again once the server has
// answered. A setting the client SETs itself is its own from then on, and follows it to other servers.
import { HEADER_SIZE } from '../protocol/constants.js';
import { settingsQuery, TRACKED } from './params.js';

/** A ParameterStatus message's name (lower case) and value, or undefined when it is not whole in `bytes`. */
export function readStatus(bytes: Buffer, end: number): { name: string; value: string } | undefined {
  const nameEnd = bytes.indexOf(0, HEADER_SIZE);
  if (nameEnd < 0 || nameEnd >= end) return undefined;
  const valueEnd = bytes.indexOf(0, nameEnd + 1);
  if (valueEnd < 0 || valueEnd >= end) return undefined;
  return { name: bytes.toString('utf8', HEADER_SIZE, nameEnd).toLowerCase(), value: bytes.toString('utf8', nameEnd + 1, valueEnd) };
}

/** A ParameterStatus message. */
function statusMessage(name: string, value: string): Buffer {
  const body = Buffer.from(`${name}\0${value}\0`, 'utf8');
  const out = Buffer.allocUnsafe(HEADER_SIZE + body.length);
  out[0] = 0x53; // S
  out.writeUInt32BE(4 + body.length, 1);
  body.copy(out, HEADER_SIZE);
  return out;
}

export class ClientSettings {
  /** Its values now: the startup's, and what it SET since, as the server reported it. */
  current: ReadonlyMap<string, Buffer>;
  /** The value last told of each tracked setting, where it is not the greeting's. */
  private told: Map<string, string> | undefined;
  /** A reset the client ran in the group being answered: DISCARD ALL ('all') or RESET ('some'). */
  private reset: 'all' | 'some' | undefined;
  /** Tracked settings a RESET took back, as their ParameterStatus told. */
  private resetNames: string[] | undefined;

  /** The tracked settings' names and values in the client's greeting (as the server spelled them), once asked. */
  private greetedNow: ReadonlyMap<string, { readonly name: string; readonly value: string }> | undefined;

  constructor(
    private readonly startup: ReadonlyMap<string, Buffer>,
    /** Reads the greeting's tracked settings, when first needed (an idle client keeps no copy). */
    private readonly readGreeted: () => ReadonlyMap<string, { readonly name: string; readonly value: string }>,
  ) {
    this.current = startup;
  }

  private get greeted(): ReadonlyMap<string, { readonly name: string; readonly value: string }> {
    return (this.greetedNow ??= this.readGreeted());
  }

  /** The tracked settings' ParameterStatus in a greeting (the bytes the client was sent at login). */
  static greetedIn(greeting: Buffer): Map<string, { name: string; value: string }> {
    const out = new Map<string, { name: string; value: string }>();
    for (let at = 0; at + HEADER_SIZE <= greeting.length; ) {
      const length = greeting.readUInt32BE(at + 1);
      if (greeting[at] === 0x53) {
        const message = greeting.subarray(at, at + 1 + length);
        const nameEnd = message.indexOf(0, HEADER_SIZE);
        const name = message.toString('utf8', HEADER_SIZE, nameEnd);
        if (TRACKED.has(name.toLowerCase()))
          out.set(name.toLowerCase(), { name, value: message.toString('utf8', nameEnd + 1, message.length - 1) });
      }
      at += 1 + length;
    }
    return out;
  }

  /** A CommandComplete of the client's own. */
  onTag(tag: string): void {
    if (tag === 'DISCARD ALL') this.reset = 'all';
    else if (tag === 'RESET') this.reset ??= 'some';
  }

  /**
   * A ParameterStatus of the client's own (`message`: its bytes, whole): passed (false), kept (true), or
   * replaced by what PostgreSQL would tell the client.
   */
  onStatus(message: Buffer): boolean | Buffer {
    const status = readStatus(message, message.length);
    if (!status || !TRACKED.has(status.name)) return false;
    const greeted = this.greeted.get(status.name);
    const told = this.told?.get(status.name) ?? greeted?.value;
    if (this.reset && greeted) {
      // Back to the client's startup value, as its own session would be: told only if it changed.
      (this.resetNames ??= []).push(status.name);
      this.told?.delete(status.name);
      return told === greeted.value ? true : statusMessage(greeted.name, greeted.value);
    }
    // Its own SET: its value from now on.
    if (greeted && status.value === greeted.value) this.told?.delete(status.name);
    else (this.told ??= new Map()).set(status.name, status.value);
    const current = new Map(this.current);
    current.set(status.name, Buffer.from(status.value, 'utf8'));
    this.current = current;
    return false;
  }

  /**
   * The client's group was answered (its ReadyForQuery). After a reset, the query that sets the client's
   * values again on a server holding `tracked` (what the reset left: none after DISCARD ALL); the caller
   * sends it, its answer kept from the client. Undefined: nothing to set.
   */
  afterGroup(
    tracked: ReadonlyMap<string, Buffer>,
  ): { query: Buffer; tracked: ReadonlyMap<string, Buffer>; left: ReadonlyMap<string, Buffer> } | undefined {
    const reset = this.reset;
    if (!reset) return undefined;
    this.reset = undefined;
    const names = this.resetNames ?? [];
    this.resetNames = undefined;
    let left: Map<string, Buffer>;
    if (reset === 'all') {
      this.current = this.startup;
      left = new Map();
    } else {
      const current = new Map(this.current);
      left = new Map(tracked);
      for (const name of names) {
        const value = this.startup.get(name);
        if (value) current.set(name, value);
        else current.delete(name);
        left.delete(name);
      }
      this.current = current;
    }
    const query = settingsQuery(this.current, left);
    return query ? { query, tracked: this.current, left } : undefined;
  }
}
