// Host and port as users write them (endpoints, dial addresses, listeners): no cloud's concern.
import { isIP } from 'node:net';

/** A host and port as the user wrote them. `host` never carries IPv6 brackets. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export const DEFAULT_PG_PORT = 5432;

/** Parse `HOST[:PORT]`, `[V6]:PORT` or a bare IPv6 address. Throws with a message naming `what`. */
export function parseHostPort(text: string, what: string, defaultPort: number | null = DEFAULT_PG_PORT): HostPort {
  const value = text.trim();
  let host = value;
  let port: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d*))?$/.exec(value);
  if (bracketed) {
    host = bracketed[1]!;
    port = bracketed[2];
  } else if (isIP(value) !== 6) {
    const colon = value.lastIndexOf(':');
    if (colon !== -1) {
      host = value.slice(0, colon);
      port = value.slice(colon + 1);
    }
  }
  if (host === '' || /[\s/]/.test(host)) throw new Error(`${what}: "${text}" is not a host name or address`);
  if (port === undefined) {
    if (defaultPort === null) throw new Error(`${what}: "${text}" needs a port (HOST:PORT)`);
    return { host, port: defaultPort };
  }
  const n = Number(port);
  if (!/^\d+$/.test(port) || n > 65535) throw new Error(`${what}: "${port}" is not a port number (0-65535)`);
  return { host, port: n };
}

/** Each HostPort's text, made once: a session names its endpoint in two log lines, and isIP is a long regular expression. */
const formatted = new WeakMap<HostPort, string>();

export function formatHostPort(hostPort: HostPort): string {
  let text = formatted.get(hostPort);
  if (text === undefined) {
    const { host, port } = hostPort;
    text = `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
    formatted.set(hostPort, text);
  }
  return text;
}
