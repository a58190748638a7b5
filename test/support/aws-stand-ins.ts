// Loopback stand-ins for the AWS credential endpoints, meant to be driven
// through the REAL AWS SDK v3 credential providers:
//
//   startImds()  EC2 instance metadata, IMDSv2 only
//                -> AWS_EC2_METADATA_SERVICE_ENDPOINT=<url>
//   startEcs()   container credentials endpoint (ECS / EKS pod identity / fromHttp)
//                -> AWS_CONTAINER_CREDENTIALS_FULL_URI=<url>
//                   [AWS_CONTAINER_AUTHORIZATION_TOKEN=<authorizationToken>]
//   startSts()   STS, AWS query protocol (POST / with a form body)
//                -> AWS_ENDPOINT_URL_STS=<url>  (or clientConfig.endpoint)
//
// plus writers for the shared config / credentials INI files and for a
// credential_process helper script.
//
// Every server listens on 127.0.0.1 only, uses node:http and node built-ins
// only, records each request it sees, and issues credentials from a generator
// the test controls. Each credential fetch (IMDS role GET, ECS GET, STS
// AssumeRole* / GetSessionToken) issues a NEW set: queued sets from issue()
// first, then the generator, then random defaults. Session tokens are kept
// short (<= 40 chars) on purpose: the test database's pam_exec hands over at
// most 511 bytes of password, and a presigned RDS token embeds the session
// token.
//
// Failure injection, per stand-in:
//   stop() / restart()   close the listener (connection refused, keep-alive
//                        sockets destroyed) and re-listen on the SAME port
//   down(mode) / up()    'refuse' (= stop), 'http500', 'reset' (socket destroyed
//                        without a response) or 'hang' (never answers; only a
//                        client timeout ends it)

import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, existsSync, chmodSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';

export const LOOPBACK = '127.0.0.1';

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

export interface IssuedCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiration: Date;
}

export type StandInKind = 'imds' | 'ecs' | 'sts';

/** What the generator is told about the issuance it is asked for. */
export interface IssueContext {
  kind: StandInKind;
  /** 1-based count of credential sets this stand-in has issued, including this one. */
  seq: number;
  /** STS action (AssumeRole, AssumeRoleWithWebIdentity, GetSessionToken). */
  action?: string;
  /** Request parameters (STS form params; empty for IMDS / ECS). */
  params: Record<string, string>;
  /** Access key id that signed the STS request, if any. */
  callerAccessKeyId?: string;
}

/** Returns (part of) the next credential set; missing fields get random defaults. */
export type CredentialGenerator = (ctx: IssueContext) => Partial<IssuedCredentials>;

const UPPER_ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const SECRET_CHARS = `${ALNUM}+/`;

function randomString(length: number, alphabet: string): string {
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

/** 20-char AWS-looking access key id: `ASIA` (temporary) or `AKIA` (long-term) + 16. */
export function randomAccessKeyId(prefix: 'ASIA' | 'AKIA' | string = 'ASIA'): string {
  return prefix + randomString(Math.max(0, 20 - prefix.length), UPPER_ALNUM);
}

/** 40-char secret access key. */
export function randomSecretAccessKey(): string {
  return randomString(40, SECRET_CHARS);
}

/** Short (32 chars) session token; real ones are hundreds of bytes. */
export function randomSessionToken(): string {
  return `ST${randomString(30, ALNUM)}`;
}

/** A full random temporary credential set, valid for `lifetimeMs` (default 1 h). */
export function makeCredentials(partial: Partial<IssuedCredentials> = {}, lifetimeMs = 3_600_000): IssuedCredentials {
  return {
    accessKeyId: partial.accessKeyId ?? randomAccessKeyId('ASIA'),
    secretAccessKey: partial.secretAccessKey ?? randomSecretAccessKey(),
    sessionToken: partial.sessionToken ?? randomSessionToken(),
    // Whole seconds, like AWS; an explicit expiration is sent as given.
    expiration: partial.expiration ?? new Date(Math.floor((Date.now() + lifetimeMs) / 1000) * 1000),
  };
}

/** RFC 3339 / ISO 8601 in UTC; drops `.000` so whole seconds look like AWS's. */
export function awsTimestamp(d: Date): string {
  return d.toISOString().replace(/\.000Z$/, 'Z');
}

// ---------------------------------------------------------------------------
// Common server machinery
// ---------------------------------------------------------------------------

export interface RecordedRequest {
  /** 1-based arrival order on this stand-in. */
  seq: number;
  at: Date;
  method: string;
  /** Path without the query string. */
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  /** STS: the Action parameter. */
  action?: string;
  /** STS: the access key id from the SigV4 `Credential=` scope, if signed. */
  accessKeyId?: string;
  /** STS: region from the SigV4 credential scope. */
  signingRegion?: string;
  /** STS: X-Amz-Security-Token the request carried. */
  securityToken?: string;
  /** STS: form + query parameters. Others: query parameters. */
  params: Record<string, string>;
  /** HTTP status sent; 0 when the socket was reset or the request hung. */
  status: number;
  /** Error code sent (STS error Code, or a short reason for IMDS / ECS rejections). */
  error?: string;
  /** Credentials issued by this request, if any. */
  issued?: IssuedCredentials;
  /** Set when an injected failure (down()) answered this request. */
  failure?: Exclude<FailureMode, 'refuse'>;
}

export type RequestFilter =
  | Partial<Pick<RecordedRequest, 'method' | 'path' | 'action' | 'accessKeyId' | 'status' | 'error'>>
  | ((r: RecordedRequest) => boolean);

export type FailureMode = 'refuse' | 'http500' | 'reset' | 'hang';

export interface CommonOptions {
  /** Credential generator; see IssueContext. */
  credentials?: CredentialGenerator;
  /** Default lifetime of generated credentials (when the generator sets no expiration). 1 h. */
  lifetimeMs?: number;
}

export interface StandIn {
  readonly kind: StandInKind;
  /** For IMDS / STS `http://127.0.0.1:PORT`; for ECS the full credentials URL. */
  readonly url: string;
  /** `http://127.0.0.1:PORT`. */
  readonly origin: string;
  readonly port: number;
  /** Every request seen, in order (connection-refused attempts never arrive). */
  readonly requests: RecordedRequest[];
  /** Every credential set issued, in order. */
  readonly issued: IssuedCredentials[];
  /** Number of recorded requests matching the filter (all when omitted). */
  count(filter?: RequestFilter): number;
  /** Last recorded request matching the filter. */
  last(filter?: RequestFilter): RecordedRequest | undefined;
  /** Queue exact credential sets for the next issuances (before the generator). */
  issue(...next: Partial<IssuedCredentials>[]): void;
  /** Replace the generator. */
  setCredentials(generator: CredentialGenerator | undefined): void;
  /** Make subsequent requests fail; default 'refuse' (closes the listener). */
  down(mode?: FailureMode): Promise<void>;
  /** Undo down(): answer normally again (re-listening on the same port if needed); hung requests are reset. */
  up(): Promise<void>;
  /** Close the listener and destroy open sockets: clients get ECONNREFUSED. */
  stop(): Promise<void>;
  /** Listen again on the same port. */
  restart(): Promise<void>;
  /** Forget recorded requests and issued credentials (sequence numbers continue). */
  clear(): void;
  close(): Promise<void>;
}

interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  error?: string;
  issued?: IssuedCredentials;
}

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

abstract class Base implements StandIn {
  readonly requests: RecordedRequest[] = [];
  readonly issued: IssuedCredentials[] = [];
  port = 0;
  protected path = '';
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly hung = new Set<ServerResponse>();
  private listening = false;
  private closed = false;
  private mode: FailureMode | undefined;
  private seq = 0;
  private issuedSeq = 0;
  private readonly queue: Partial<IssuedCredentials>[] = [];
  private generator: CredentialGenerator | undefined;
  private readonly lifetimeMs: number;

  constructor(
    readonly kind: StandInKind,
    opts: CommonOptions,
  ) {
    this.generator = opts.credentials;
    this.lifetimeMs = opts.lifetimeMs ?? 3_600_000;
    this.server = createServer((req, res) => void this.dispatch(req, res));
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

  issue(...next: Partial<IssuedCredentials>[]): void {
    this.queue.push(...next);
  }

  setCredentials(generator: CredentialGenerator | undefined): void {
    this.generator = generator;
  }

  /** Next credential set: queued, else generated, defaults filling the gaps. */
  protected nextCredentials(ctx: Omit<IssueContext, 'kind' | 'seq'>): IssuedCredentials {
    const seq = ++this.issuedSeq;
    const partial = this.queue.shift() ?? this.generator?.({ kind: this.kind, seq, ...ctx }) ?? {};
    const creds = makeCredentials(partial, this.lifetimeMs);
    this.issued.push(creds);
    return creds;
  }

  async down(mode: FailureMode = 'refuse'): Promise<void> {
    this.mode = mode;
    if (mode === 'refuse') await this.stop();
    else if (!this.listening) await this.restart();
  }

  async up(): Promise<void> {
    this.mode = undefined;
    // Requests still hanging from down('hang') see their connection reset.
    for (const res of this.hung) res.socket?.destroy();
    this.hung.clear();
    if (!this.listening) await this.restart();
  }

  async stop(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  async restart(): Promise<void> {
    if (this.closed) throw new Error(`${this.kind} stand-in is closed`);
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
    if (this.mode === 'refuse') this.mode = undefined;
  }

  clear(): void {
    this.requests.length = 0;
    this.issued.length = 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.stop();
  }

  /** Answers one request (down() not in effect). */
  protected abstract handle(rec: RecordedRequest, body: string, req: IncomingMessage): Reply;

  /** Fills protocol-level fields of the record (runs even while down). */
  protected annotate(_rec: RecordedRequest, _body: string, _req: IncomingMessage): void {}

  /** The answer while down('http500'). */
  protected failureReply(): Reply {
    return { status: 500, headers: TEXT, body: 'Internal Server Error', error: 'InternalFailure' };
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', this.origin);
    const rec: RecordedRequest = {
      seq: ++this.seq,
      at: new Date(),
      method: req.method ?? 'GET',
      path: u.pathname,
      query: Object.fromEntries(u.searchParams),
      headers: req.headers,
      params: Object.fromEntries(u.searchParams),
      status: 0,
    };
    this.requests.push(rec);
    let body: string;
    try {
      body = await readBody(req);
    } catch {
      return;
    }
    this.annotate(rec, body, req);
    const mode = this.mode;
    if (mode === 'hang') {
      rec.failure = 'hang';
      this.hung.add(res);
      res.once('close', () => this.hung.delete(res));
      return; // ended by the client's timeout, up(), stop() or close()
    }
    if (mode === 'reset') {
      rec.failure = 'reset';
      req.socket.destroy();
      return;
    }
    let reply: Reply;
    if (mode === 'http500') {
      rec.failure = 'http500';
      reply = this.failureReply();
    } else {
      try {
        reply = this.handle(rec, body, req);
      } catch (err) {
        reply = { status: 500, body: String(err), error: 'StandInBug' };
      }
    }
    rec.status = reply.status;
    if (reply.error !== undefined) rec.error = reply.error;
    if (reply.issued !== undefined) rec.issued = reply.issued;
    const payload = reply.body ?? '';
    res.writeHead(reply.status, {
      'content-length': String(Buffer.byteLength(payload)),
      ...reply.headers,
    });
    res.end(payload);
  }
}

// ---------------------------------------------------------------------------
// IMDS (IMDSv2 only)
// ---------------------------------------------------------------------------

export interface ImdsOptions extends CommonOptions {
  /** Instance profile role name served by security-credentials/. Default `stand-in-role`. */
  roleName?: string;
  /** Account id for the -extended document and iam/info. Default 123456789012. */
  accountId?: string;
}

export interface ImdsStandIn extends StandIn {
  readonly roleName: string;
  /** Session tokens handed out by PUT /latest/api/token, in order. */
  readonly tokens: string[];
  /** Invalidate every session token handed out so far (next GETs get 401). */
  expireTokens(): void;
}

const IMDS_TOKEN_PATH = '/latest/api/token';
const IMDS_CREDS = '/latest/meta-data/iam/security-credentials';
const IMDS_CREDS_EXT = '/latest/meta-data/iam/security-credentials-extended';
const TEXT = { 'content-type': 'text/plain' };
const JSON_TYPE = { 'content-type': 'application/json' };

class Imds extends Base implements ImdsStandIn {
  readonly roleName: string;
  readonly tokens: string[] = [];
  private readonly live = new Map<string, number>();
  private readonly accountId: string;

  constructor(opts: ImdsOptions) {
    super('imds', opts);
    this.roleName = opts.roleName ?? 'stand-in-role';
    this.accountId = opts.accountId ?? '123456789012';
  }

  expireTokens(): void {
    this.live.clear();
  }

  protected handle(rec: RecordedRequest, _body: string, req: IncomingMessage): Reply {
    if (rec.path === IMDS_TOKEN_PATH) {
      if (rec.method !== 'PUT') return { status: 405, headers: TEXT, body: 'Method Not Allowed', error: 'method' };
      if (req.headers['x-forwarded-for'] !== undefined) return { status: 403, headers: TEXT, body: 'Forbidden', error: 'forwarded' };
      const ttlHeader = req.headers['x-aws-ec2-metadata-token-ttl-seconds'];
      const ttl = Number(ttlHeader);
      if (typeof ttlHeader !== 'string' || !/^\d+$/.test(ttlHeader) || ttl < 1 || ttl > 21_600) {
        return { status: 400, headers: TEXT, body: 'Bad Request', error: 'ttl' };
      }
      const token = `AQAE${randomBytes(18).toString('base64url')}`;
      this.tokens.push(token);
      this.live.set(token, Date.now() + ttl * 1000);
      return { status: 200, headers: { ...TEXT, 'x-aws-ec2-metadata-token-ttl-seconds': String(ttl) }, body: token };
    }
    if (rec.method !== 'GET' && rec.method !== 'HEAD') {
      return { status: 405, headers: TEXT, body: 'Method Not Allowed', error: 'method' };
    }
    const token = req.headers['x-aws-ec2-metadata-token'];
    const expiry = typeof token === 'string' ? this.live.get(token) : undefined;
    if (expiry === undefined || expiry < Date.now()) {
      // IMDSv2 "required": no IMDSv1 fallback.
      return { status: 401, headers: TEXT, body: 'Unauthorized', error: token === undefined ? 'no-token' : 'bad-token' };
    }
    const notFound: Reply = { status: 404, headers: { 'content-type': 'text/html' }, body: '<html><body><h1>404 - Not Found</h1></body></html>', error: 'not-found' };
    const now = awsTimestamp(new Date());
    switch (rec.path) {
      case `${IMDS_CREDS}/`:
      case IMDS_CREDS:
      case `${IMDS_CREDS_EXT}/`:
      case IMDS_CREDS_EXT:
        return { status: 200, headers: TEXT, body: this.roleName };
      case `${IMDS_CREDS}/${this.roleName}`:
      case `${IMDS_CREDS_EXT}/${this.roleName}`: {
        const creds = this.nextCredentials({ params: {} });
        const doc: Record<string, string> = {
          Code: 'Success',
          LastUpdated: now,
          Type: 'AWS-HMAC',
          AccessKeyId: creds.accessKeyId,
          SecretAccessKey: creds.secretAccessKey,
          Token: creds.sessionToken,
          Expiration: awsTimestamp(creds.expiration),
        };
        if (rec.path.startsWith(IMDS_CREDS_EXT)) doc['AccountId'] = this.accountId;
        return { status: 200, headers: TEXT, body: JSON.stringify(doc, null, 2), issued: creds };
      }
      case '/latest/meta-data/iam/info':
        return {
          status: 200,
          headers: TEXT,
          body: JSON.stringify({
            Code: 'Success',
            LastUpdated: now,
            InstanceProfileArn: `arn:aws:iam::${this.accountId}:instance-profile/${this.roleName}`,
            InstanceProfileId: 'AIPASTANDIN000000000',
          }),
        };
      default:
        return notFound;
    }
  }
}

/** IMDSv2 on 127.0.0.1:<random port>. Point the SDK at it with AWS_EC2_METADATA_SERVICE_ENDPOINT=url. */
export async function startImds(opts: ImdsOptions = {}): Promise<ImdsStandIn> {
  return new Imds(opts).start();
}

// ---------------------------------------------------------------------------
// Container credentials endpoint
// ---------------------------------------------------------------------------

export interface EcsOptions extends CommonOptions {
  /** Path serving credentials. Default `/creds`. */
  path?: string;
  /** When set, requests must carry exactly this Authorization header value, else 401. */
  authorizationToken?: string;
  /** RoleArn included in the document. Default arn:aws:iam::123456789012:role/stand-in-task-role. */
  roleArn?: string;
  /** When set, AccountId is included (EKS pod identity style). */
  accountId?: string;
}

export interface EcsStandIn extends StandIn {
  /** Current required Authorization value (undefined: none required). */
  authorizationToken: string | undefined;
}

class Ecs extends Base implements EcsStandIn {
  authorizationToken: string | undefined;
  private readonly roleArn: string;
  private readonly accountId: string | undefined;

  constructor(opts: EcsOptions) {
    super('ecs', opts);
    this.path = opts.path ?? '/creds';
    this.authorizationToken = opts.authorizationToken;
    this.roleArn = opts.roleArn ?? 'arn:aws:iam::123456789012:role/stand-in-task-role';
    this.accountId = opts.accountId;
  }

  protected override failureReply(): Reply {
    return { status: 500, headers: JSON_TYPE, body: JSON.stringify({ Code: 'InternalFailure', Message: 'stand-in is down' }), error: 'InternalFailure' };
  }

  protected handle(rec: RecordedRequest, _body: string, req: IncomingMessage): Reply {
    const deny = (status: number, code: string, message: string): Reply => ({
      status,
      headers: JSON_TYPE,
      body: JSON.stringify({ Code: code, Message: message }),
      error: code,
    });
    if (rec.path !== this.path) return deny(404, 'NotFound', `no credentials at ${rec.path}`);
    if (rec.method !== 'GET') return deny(405, 'MethodNotAllowed', rec.method);
    if (this.authorizationToken !== undefined && req.headers['authorization'] !== this.authorizationToken) {
      return deny(401, 'AccessDenied', 'missing or wrong Authorization token');
    }
    const creds = this.nextCredentials({ params: rec.params });
    const doc: Record<string, string> = {
      RoleArn: this.roleArn,
      AccessKeyId: creds.accessKeyId,
      SecretAccessKey: creds.secretAccessKey,
      Token: creds.sessionToken,
      Expiration: awsTimestamp(creds.expiration),
    };
    if (this.accountId !== undefined) doc['AccountId'] = this.accountId;
    return { status: 200, headers: JSON_TYPE, body: JSON.stringify(doc), issued: creds };
  }
}

/**
 * Container credentials endpoint. Use with AWS_CONTAINER_CREDENTIALS_FULL_URI=url
 * (and AWS_CONTAINER_AUTHORIZATION_TOKEN when authorizationToken is set).
 */
export async function startEcs(opts: EcsOptions = {}): Promise<EcsStandIn> {
  return new Ecs(opts).start();
}

// ---------------------------------------------------------------------------
// STS (query protocol)
// ---------------------------------------------------------------------------

export interface StsFault {
  code: string;
  message?: string;
  /** HTTP status. Default 403 (400 for ValidationError-like codes is up to the caller). */
  status?: number;
  type?: 'Sender' | 'Receiver';
}

export interface StsIdentity {
  arn: string;
  userId: string;
  account: string;
}

export interface StsOptions extends CommonOptions {
  /** Default account for identities of unknown / static keys. 123456789012. */
  account?: string;
  /**
   * Allow-list of access key ids that may sign requests. When given, signed
   * actions from any other key get 403 InvalidClientTokenId. Keys issued by
   * this stand-in are added automatically.
   */
  knownAccessKeyIds?: Iterable<string>;
  /** Expected WebIdentityToken (exact string or predicate); mismatch -> 400 InvalidIdentityToken. */
  webIdentityToken?: string | ((token: string) => boolean);
  /** Expected MFA TokenCode whenever SerialNumber is sent; mismatch -> 403 AccessDenied. */
  mfaTokenCode?: string;
  /** Hook to reject any request with a fault (after parsing, before the action runs). */
  reject?: (rec: RecordedRequest) => StsFault | undefined;
}

export interface StsStandIn extends StandIn {
  /** Add keys to the allow-list (creating it if none was configured). */
  allow(...accessKeyIds: string[]): void;
  /** Make the next `times` requests (optionally only of `action`) fail with `fault`. */
  failNext(fault: StsFault, opts?: { times?: number; action?: string }): void;
  /** Identity GetCallerIdentity reports for a key; set your own for static keys. */
  readonly identities: Map<string, StsIdentity>;
}

const STS_NS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const SIGNED_ACTIONS = new Set(['AssumeRole', 'GetCallerIdentity', 'GetSessionToken']);
const SESSION_NAME_RE = /^[\w+=,.@-]{2,64}$/;

function xmlEscape(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c] as string);
}

type XmlTree = { [k: string]: string | number | XmlTree | undefined };

function toXml(tree: XmlTree): string {
  return Object.entries(tree)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `<${k}>${typeof v === 'object' ? toXml(v as XmlTree) : xmlEscape(String(v))}</${k}>`)
    .join('');
}

function credentialsXml(c: IssuedCredentials): XmlTree {
  return {
    AccessKeyId: c.accessKeyId,
    SecretAccessKey: c.secretAccessKey,
    SessionToken: c.sessionToken,
    Expiration: awsTimestamp(c.expiration),
  };
}

/** Parses `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, ...`. */
export function parseSigV4Credential(authorization: string | undefined): { accessKeyId: string; date: string; region: string; service: string } | undefined {
  const m = /Credential=([^/,\s]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request/.exec(authorization ?? '');
  if (m === null) return undefined;
  return { accessKeyId: m[1] as string, date: m[2] as string, region: m[3] as string, service: m[4] as string };
}

class Sts extends Base implements StsStandIn {
  readonly identities = new Map<string, StsIdentity>();
  private known: Set<string> | undefined;
  private readonly faults: Array<{ fault: StsFault; action?: string; left: number }> = [];
  private readonly account: string;

  constructor(private readonly opts: StsOptions) {
    super('sts', opts);
    this.account = opts.account ?? '123456789012';
    if (opts.knownAccessKeyIds !== undefined) this.known = new Set(opts.knownAccessKeyIds);
  }

  allow(...accessKeyIds: string[]): void {
    this.known ??= new Set();
    for (const k of accessKeyIds) this.known.add(k);
  }

  failNext(fault: StsFault, opts: { times?: number; action?: string } = {}): void {
    this.faults.push({ fault, ...(opts.action === undefined ? {} : { action: opts.action }), left: opts.times ?? 1 });
  }

  private error(f: StsFault): Reply {
    const requestId = randomUUID();
    const body =
      `<ErrorResponse xmlns="${STS_NS}">` +
      toXml({ Error: { Type: f.type ?? 'Sender', Code: f.code, Message: f.message ?? f.code } }) +
      toXml({ RequestId: requestId }) +
      `</ErrorResponse>\n`;
    return { status: f.status ?? 403, headers: { 'content-type': 'text/xml', 'x-amzn-requestid': requestId }, body, error: f.code };
  }

  private ok(action: string, result: XmlTree): Reply {
    const requestId = randomUUID();
    const body =
      `<${action}Response xmlns="${STS_NS}">\n` +
      `  <${action}Result>${toXml(result)}</${action}Result>\n` +
      `  <ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata>\n` +
      `</${action}Response>\n`;
    return { status: 200, headers: { 'content-type': 'text/xml', 'x-amzn-requestid': requestId }, body };
  }

  private identityOf(accessKeyId: string): StsIdentity {
    return (
      this.identities.get(accessKeyId) ?? {
        arn: `arn:aws:iam::${this.account}:user/stand-in-user`,
        userId: `AIDA${accessKeyId.slice(4, 20).padEnd(17, 'X')}`,
        account: this.account,
      }
    );
  }

  protected override annotate(rec: RecordedRequest, body: string, req: IncomingMessage): void {
    const form = (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded');
    rec.params = { ...rec.query, ...(form ? Object.fromEntries(new URLSearchParams(body)) : {}) };
    const p = rec.params;
    if (p['Action'] !== undefined) rec.action = p['Action'];
    const sig = parseSigV4Credential(req.headers['authorization'] ?? (p['X-Amz-Credential'] === undefined ? undefined : `Credential=${p['X-Amz-Credential']}`));
    if (sig !== undefined) {
      rec.accessKeyId = sig.accessKeyId;
      rec.signingRegion = sig.region;
    }
    const securityToken = req.headers['x-amz-security-token'] ?? p['X-Amz-Security-Token'];
    if (typeof securityToken === 'string') rec.securityToken = securityToken;
  }

  protected override failureReply(): Reply {
    return this.error({ code: 'InternalFailure', status: 500, type: 'Receiver', message: 'stand-in is down' });
  }

  protected handle(rec: RecordedRequest, body: string, req: IncomingMessage): Reply {
    const contentType = req.headers['content-type'] ?? '';
    if (rec.method === 'POST' && body !== '' && !contentType.startsWith('application/x-www-form-urlencoded')) {
      return this.error({ code: 'InvalidParameterValue', status: 400, message: `unsupported content-type ${contentType}` });
    }
    if (rec.method !== 'POST' && rec.method !== 'GET') return this.error({ code: 'InvalidAction', status: 400, message: rec.method });
    const p = rec.params;
    const action = p['Action'];
    const sig = parseSigV4Credential(req.headers['authorization'] ?? (p['X-Amz-Credential'] === undefined ? undefined : `Credential=${p['X-Amz-Credential']}`));

    const idx = this.faults.findIndex((f) => f.action === undefined || f.action === action);
    if (idx >= 0) {
      const f = this.faults[idx]!;
      if (--f.left <= 0) this.faults.splice(idx, 1);
      return this.error(f.fault);
    }
    const hooked = this.opts.reject?.(rec);
    if (hooked !== undefined) return this.error(hooked);

    if (action === undefined) return this.error({ code: 'MissingAction', status: 400, message: 'Missing Action' });
    if (p['Version'] !== '2011-06-15') {
      return this.error({ code: 'InvalidParameterValue', status: 400, message: `bad Version ${p['Version'] ?? '(none)'}` });
    }
    if (SIGNED_ACTIONS.has(action)) {
      if (sig === undefined) return this.error({ code: 'MissingAuthenticationToken', message: 'Request is missing Authentication Token' });
      if (sig.service !== 'sts') return this.error({ code: 'SignatureDoesNotMatch', message: `credential scope service ${sig.service}` });
      if (this.known !== undefined && !this.known.has(sig.accessKeyId)) {
        return this.error({ code: 'InvalidClientTokenId', message: 'The security token included in the request is invalid.' });
      }
    }
    switch (action) {
      case 'AssumeRole':
      case 'AssumeRoleWithWebIdentity':
        return this.assumeRole(rec, action);
      case 'GetCallerIdentity': {
        const id = this.identityOf(sig!.accessKeyId);
        return this.ok(action, { Arn: id.arn, UserId: id.userId, Account: id.account });
      }
      case 'GetSessionToken': {
        const mfa = this.checkMfa(rec);
        if (mfa !== undefined) return mfa;
        const creds = this.nextCredentials({ action, params: p, callerAccessKeyId: sig!.accessKeyId });
        this.remember(creds, this.identityOf(sig!.accessKeyId));
        return { ...this.ok(action, { Credentials: credentialsXml(creds) }), issued: creds };
      }
      default:
        return this.error({ code: 'InvalidAction', status: 400, message: `Could not find operation ${action} for version 2011-06-15` });
    }
  }

  private checkMfa(rec: RecordedRequest): Reply | undefined {
    const serial = rec.params['SerialNumber'];
    const code = rec.params['TokenCode'];
    if (serial === undefined && code === undefined) return undefined;
    if (serial === undefined || code === undefined) {
      return this.error({ code: 'AccessDenied', message: 'MultiFactorAuthentication failed, must provide both MFA serial number and one time pass code.' });
    }
    if (this.opts.mfaTokenCode !== undefined && code !== this.opts.mfaTokenCode) {
      return this.error({ code: 'AccessDenied', message: 'MultiFactorAuthentication failed with invalid MFA one time pass code.' });
    }
    return undefined;
  }

  private remember(creds: IssuedCredentials, id: StsIdentity): void {
    this.known?.add(creds.accessKeyId);
    this.identities.set(creds.accessKeyId, id);
  }

  private assumeRole(rec: RecordedRequest, action: 'AssumeRole' | 'AssumeRoleWithWebIdentity'): Reply {
    const p = rec.params;
    const roleArn = p['RoleArn'];
    const session = p['RoleSessionName'];
    if (roleArn === undefined || session === undefined) {
      return this.error({ code: 'ValidationError', status: 400, message: 'RoleArn and RoleSessionName are required' });
    }
    if (!SESSION_NAME_RE.test(session)) {
      return this.error({ code: 'ValidationError', status: 400, message: `invalid RoleSessionName ${session}` });
    }
    const arn = /^arn:(aws[\w-]*):iam::(\d{12}):role\/(?:.*\/)?([\w+=,.@-]+)$/.exec(roleArn);
    if (arn === null) return this.error({ code: 'ValidationError', status: 400, message: `invalid RoleArn ${roleArn}` });
    const [, partition, account, roleName] = arn as unknown as [string, string, string, string];
    if (action === 'AssumeRoleWithWebIdentity') {
      const token = p['WebIdentityToken'];
      if (token === undefined || token === '') {
        return this.error({ code: 'ValidationError', status: 400, message: 'WebIdentityToken is required' });
      }
      const want = this.opts.webIdentityToken;
      if (want !== undefined && !(typeof want === 'string' ? token.trim() === want.trim() : want(token))) {
        return this.error({ code: 'InvalidIdentityToken', status: 400, message: 'Incorrect token audience or signature' });
      }
    } else {
      const mfa = this.checkMfa(rec);
      if (mfa !== undefined) return mfa;
    }
    const creds = this.nextCredentials({
      action,
      params: p,
      ...(rec.accessKeyId === undefined ? {} : { callerAccessKeyId: rec.accessKeyId }),
    });
    const roleId = `AROA${Buffer.from(roleArn).toString('hex').toUpperCase().replace(/[^A-Z2-7]/g, '').padEnd(17, 'Q').slice(0, 17)}`;
    const id: StsIdentity = {
      arn: `arn:${partition}:sts::${account}:assumed-role/${roleName}/${session}`,
      userId: `${roleId}:${session}`,
      account,
    };
    this.remember(creds, id);
    const result: XmlTree =
      action === 'AssumeRole'
        ? {
            Credentials: credentialsXml(creds),
            AssumedRoleUser: { AssumedRoleId: id.userId, Arn: id.arn },
            PackedPolicySize: p['Policy'] === undefined ? undefined : 6,
            SourceIdentity: p['SourceIdentity'],
          }
        : {
            Credentials: credentialsXml(creds),
            SubjectFromWebIdentityToken: 'stand-in-subject',
            AssumedRoleUser: { AssumedRoleId: id.userId, Arn: id.arn },
            Provider: 'stand-in.example',
            Audience: 'sts.amazonaws.com',
          };
    return { ...this.ok(action, result), issued: creds };
  }
}

/**
 * STS query-protocol endpoint. Point the SDK at it with AWS_ENDPOINT_URL_STS=url
 * (or `clientConfig: { endpoint: url }`); any region works, it is only recorded.
 */
export async function startSts(opts: StsOptions = {}): Promise<StsStandIn> {
  return new Sts(opts).start();
}

// ---------------------------------------------------------------------------
// Shared config / credentials files
// ---------------------------------------------------------------------------

export type IniValue = string | number | boolean | undefined | Record<string, string | number | undefined>;
export type IniProfiles = Record<string, Record<string, IniValue>>;

function iniText(sections: Array<[string, Record<string, IniValue>]>): string {
  const lines: string[] = [];
  const check = (s: string) => {
    if (/[\r\n]/.test(s)) throw new Error(`INI value may not contain a newline: ${JSON.stringify(s)}`);
    return s;
  };
  for (const [header, entries] of sections) {
    lines.push(`[${check(header)}]`);
    for (const [k, v] of Object.entries(entries)) {
      if (v === undefined) continue;
      if (typeof v === 'object') {
        lines.push(`${check(k)} =`);
        for (const [sk, sv] of Object.entries(v)) if (sv !== undefined) lines.push(`  ${check(sk)} = ${check(String(sv))}`);
      } else {
        lines.push(`${check(k)} = ${check(String(v))}`);
      }
    }
    lines.push('');
  }
  return lines.join('\n');
}

/**
 * Writes a shared credentials file (`[name]` sections) and returns its path,
 * e.g. `{ default: { aws_access_key_id, aws_secret_access_key } }`.
 * NOTE: the SDK caches file contents per path for the life of the process
 * (unless a provider is given `ignoreCache: true`); use a fresh file name
 * when a test needs different contents.
 */
export function credentialFile(dir: string, profiles: IniProfiles, fileName = 'credentials'): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, fileName);
  writeFileSync(path, iniText(Object.entries(profiles)), { mode: 0o600 });
  return path;
}

/**
 * Writes a shared config file and returns its path. `default` becomes
 * `[default]`, names containing a space (`sso-session x`, `services x`,
 * `profile x`) are written verbatim, anything else becomes `[profile name]`.
 * Object values become sub-sections (for `services` sections).
 */
export function configFile(dir: string, profiles: IniProfiles, fileName = 'config'): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, fileName);
  const sections = Object.entries(profiles).map(
    ([name, entries]) => [name === 'default' || name.includes(' ') ? name : `profile ${name}`, entries] as [string, Record<string, IniValue>],
  );
  writeFileSync(path, iniText(sections), { mode: 0o600 });
  return path;
}

export interface CredentialProcess {
  /** Value for a profile's `credential_process`. */
  command: string;
  /** How many times the process has been run. */
  count(): number;
}

/**
 * Writes a credential_process helper (a node script printing the Version 1
 * JSON document for `creds`) and returns the command line for the profile.
 */
export function credentialProcess(dir: string, creds: Partial<IssuedCredentials> & { accessKeyId: string; secretAccessKey: string }, fileName = 'credential-process.mjs'): CredentialProcess {
  mkdirSync(dir, { recursive: true });
  const script = join(dir, fileName);
  const log = `${script}.log`;
  const doc: Record<string, string | number> = { Version: 1, AccessKeyId: creds.accessKeyId, SecretAccessKey: creds.secretAccessKey };
  if (creds.sessionToken !== undefined) doc['SessionToken'] = creds.sessionToken;
  if (creds.expiration !== undefined) doc['Expiration'] = awsTimestamp(creds.expiration);
  writeFileSync(
    script,
    `import { appendFileSync } from 'node:fs';\n` +
      `appendFileSync(${JSON.stringify(log)}, 'run\\n');\n` +
      `process.stdout.write(${JSON.stringify(JSON.stringify(doc))});\n`,
  );
  chmodSync(script, 0o700);
  writeFileSync(log, '');
  const q = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `"${s.replace(/(["\\$`])/g, '\\$1')}"`);
  return {
    command: `${q(process.execPath)} ${q(script)}`,
    count: () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).length : 0),
  };
}

/**
 * Clears every AWS_* variable from process.env, points AWS_CONFIG_FILE and
 * AWS_SHARED_CREDENTIALS_FILE at (empty unless already written) files in
 * `dir`, applies `extra`, and returns a function restoring the old env.
 */
export function isolateAwsEnv(dir: string, extra: Record<string, string | undefined> = {}): () => void {
  const saved = { ...process.env };
  for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
  mkdirSync(dir, { recursive: true });
  const cfg = join(dir, 'config');
  const cred = join(dir, 'credentials');
  if (!existsSync(cfg)) writeFileSync(cfg, '');
  if (!existsSync(cred)) writeFileSync(cred, '');
  process.env['AWS_CONFIG_FILE'] = cfg;
  process.env['AWS_SHARED_CREDENTIALS_FILE'] = cred;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  return () => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  };
}
