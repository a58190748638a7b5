// The HTTP machinery the IMDS, container and STS stand-ins share: a node:http
// server on 127.0.0.1 and a random port, a record of every request answered,
// a queue of credential sets to hand out next, and a way to go down and come
// back on the same port. Nothing points the SDK here; each stand-in's own
// module names the environment variable that does.
//
// Every credential fetch (IMDS role GET, container GET, STS AssumeRole* /
// GetSessionToken) issues a NEW set: the next one queued with issue(), else a
// random one from makeCredentials().

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { makeCredentials, type IssuedCredentials } from './keys.js';

const LOOPBACK = '127.0.0.1';

export interface RecordedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  /** Query parameters; for STS also the form body. */
  params: Record<string, string>;
  /** HTTP status sent. */
  status: number;
  /** STS: the Action parameter. */
  action?: string;
  /** STS: the access key id from the SigV4 `Credential=` scope, if signed. */
  accessKeyId?: string;
  /** STS: the region from the SigV4 scope (any is accepted). */
  signingRegion?: string;
  /** Credentials issued by this request, if any. */
  issued?: IssuedCredentials;
}

export type RequestFilter =
  | Partial<Pick<RecordedRequest, 'method' | 'path' | 'status' | 'action' | 'accessKeyId' | 'signingRegion'>>
  | ((r: RecordedRequest) => boolean);

export interface StandIn {
  /** Where the SDK is pointed: `http://127.0.0.1:PORT`, plus the credentials path for the container endpoint. */
  readonly url: string;
  /** `http://127.0.0.1:PORT`. */
  readonly origin: string;
  /** Every request answered, in order (connection-refused attempts never arrive). */
  readonly requests: RecordedRequest[];
  /** Number of recorded requests matching the filter (all when omitted). */
  count(filter?: RequestFilter): number;
  /** Last recorded request matching the filter. */
  last(filter?: RequestFilter): RecordedRequest | undefined;
  /** Queue exact credential sets for the next issuances; missing fields are random. */
  issue(...next: Partial<IssuedCredentials>[]): void;
  /**
   * Close the listener and its keep-alive sockets: clients get ECONNREFUSED.
   * 'refuse' is the only way down; callers name it so the test reads as the failure it stages.
   */
  down(how?: 'refuse'): Promise<void>;
  /** Listen again on the SAME port, so the URL the SDK was given works again. */
  up(): Promise<void>;
  close(): Promise<void>;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  issued?: IssuedCredentials;
}

export const TEXT = { 'content-type': 'text/plain' };
export const JSON_TYPE = { 'content-type': 'application/json' };

function matches(r: RecordedRequest, filter: RequestFilter | undefined): boolean {
  if (filter === undefined) return true;
  if (typeof filter === 'function') return filter(r);
  for (const [k, v] of Object.entries(filter)) {
    if (v !== undefined && r[k as keyof RecordedRequest] !== v) return false;
  }
  return true;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function listen(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, LOOPBACK);
  });
}

export abstract class StandInServer implements StandIn {
  readonly requests: RecordedRequest[] = [];
  protected path = '';
  private port = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly queue: Partial<IssuedCredentials>[] = [];
  private listening = false;
  private closed = false;
  private readonly waiters = new Set<{ n: number; filter: RequestFilter | undefined; resolve: () => void }>();

  constructor() {
    this.server = createServer((req, res) => void this.dispatch(req, res));
    // Short, so an SDK client's idle keep-alive socket does not outlive the test by much.
    this.server.keepAliveTimeout = 2_000;
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
  }

  get origin(): string {
    return `http://${LOOPBACK}:${this.port}`;
  }

  get url(): string {
    return this.origin + this.path;
  }

  async start(): Promise<this> {
    await listen(this.server, 0);
    this.port = (this.server.address() as { port: number }).port;
    this.listening = true;
    return this;
  }

  count(filter?: RequestFilter): number {
    return this.requests.filter((r) => matches(r, filter)).length;
  }

  last(filter?: RequestFilter): RecordedRequest | undefined {
    return this.requests.filter((r) => matches(r, filter)).at(-1);
  }

  /** Resolves once `n` recorded requests match the filter (at once if they already do). */
  until(n: number, filter?: RequestFilter): Promise<void> {
    if (this.count(filter) >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.add({ n, filter, resolve }));
  }

  issue(...next: Partial<IssuedCredentials>[]): void {
    this.queue.push(...next);
  }

  /** The next credential set: the queued one, else random. */
  protected nextCredentials(): IssuedCredentials {
    return makeCredentials(this.queue.shift());
  }

  async down(_how: 'refuse' = 'refuse'): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // close() alone waits for keep-alive sockets; the SDK would keep using them.
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  async up(): Promise<void> {
    if (this.closed) throw new Error('the stand-in is closed');
    if (this.listening) return;
    // Another process could grab the port in between; retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await listen(this.server, this.port);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 20) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    this.listening = true;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.down();
  }

  /** Answers one request; may fill protocol fields of `rec` (STS action, signer). */
  protected abstract handle(rec: RecordedRequest, body: string, req: IncomingMessage): Reply;

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', this.origin);
    let body: string;
    try {
      body = await readBody(req);
    } catch {
      return; // the client went away mid-request
    }
    const rec: RecordedRequest = { method: req.method ?? 'GET', path: u.pathname, params: Object.fromEntries(u.searchParams), status: 0 };
    let reply: Reply;
    try {
      reply = this.handle(rec, body, req);
    } catch (err) {
      // A bug in a stand-in shows up in the test as a 500 with the error, not as an unhandled rejection.
      reply = { status: 500, body: String(err) };
    }
    rec.status = reply.status;
    if (reply.issued !== undefined) rec.issued = reply.issued;
    this.requests.push(rec);
    for (const waiter of this.waiters) {
      if (this.count(waiter.filter) < waiter.n) continue;
      this.waiters.delete(waiter);
      waiter.resolve();
    }
    const payload = reply.body ?? '';
    res.writeHead(reply.status, { 'content-length': String(Buffer.byteLength(payload)), ...reply.headers });
    res.end(payload);
  }
}
