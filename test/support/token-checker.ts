// PAM credential checker that verifies AWS RDS IAM authentication tokens the
// way RDS does. It is run by pam_exec (as the `postgres` OS user, inside the
// backend that is authenticating a connection):
//
//   auth required pam_exec.so expose_authtok quiet /usr/bin/node checker.mjs <datadir>
//
// - The password (the IAM token) arrives on stdin (`expose_authtok`). Linux-PAM
//   writes it NUL-terminated and truncated to PAM_MAX_RESP_SIZE-1 = 511 bytes.
// - The role name being logged in as is in the env var PAM_USER.
// - <datadir>/config.json holds the expected endpoint, region and trusted keys.
// - Exit status 0 accepts the login, anything else rejects it.
//
// Every attempt appends one JSON line to <datadir>/checker.log. That log never
// contains the token, its signature or a security token, so tests can assert
// that secrets do not leak anywhere they can observe.
//
// Deliberately self-contained (node: builtins only): it is copied next to the
// database as checker.mjs and executed with no node_modules around it.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, renameSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

interface KeyConfig {
  secret: string;
  sessionToken?: string;
}

interface CheckerConfig {
  /** `endpoint:port` exactly as a client signs it in the host header. */
  host: string;
  region: string;
  keys: Record<string, KeyConfig>;
  /**
   * The HMAC key (base64) of the compact test JWTs that stand in for Azure's Entra ID tokens and Google's
   * access tokens (the real ones are verified against Microsoft's keys and Google's tokeninfo).
   */
  jwtKey?: string;
}

/** What is known about an attempt, for the log line. */
interface Attempt {
  user: string;
  accessKeyId: string;
  host: string;
  region: string;
}

class Rejection extends Error {}

const SERVICE = 'rds-db';
const ALGORITHM = 'AWS4-HMAC-SHA256';
const MAX_EXPIRES_S = 900;
const MAX_FUTURE_SKEW_S = 300;
/** pam_exec hands over at most PAM_MAX_RESP_SIZE - 1 bytes of the password. */
const PAM_AUTHTOK_LIMIT = 511;
/**
 * Payload hash of a presigned RDS token. The signer presigns a GET request
 * with no body, and @smithy/signature-v4 then hashes the empty payload
 * (it does not use UNSIGNED-PAYLOAD for presign). Verified against
 * tokens from @aws-sdk/rds-signer.
 */
const EMPTY_PAYLOAD_SHA256 = createHash('sha256').update('').digest('hex');

/** Azure Database for PostgreSQL's resource: the audience of its tokens. */
const AZURE_AUDIENCE = 'https://ossrdbms-aad.database.windows.net';
/** The scope a Cloud SQL IAM login token must carry. */
const CLOUD_SQL_SCOPE = 'https://www.googleapis.com/auth/sqlservice.login';

const dataDir = process.argv[2];
if (dataDir === undefined || dataDir === '') {
  process.stderr.write('usage: checker.mjs <datadir>\n');
  process.exit(2);
}

const attempt: Attempt = { user: process.env.PAM_USER ?? '', accessKeyId: '', host: '', region: '' };
let ok = false;
let reason = 'internal error';
try {
  const config = JSON.parse(readFileSync(join(dataDir, 'config.json'), 'utf8')) as CheckerConfig;
  const token = readToken();
  if (token.startsWith('eyJ')) verifyJwt(token, config, attempt, new Date());
  else verify(token, config, attempt, new Date());
  if (consumeForcedRejection(dataDir)) throw new Rejection('forced');
  ok = true;
  reason = 'ok';
} catch (err) {
  reason = err instanceof Rejection ? err.message : `internal error: ${(err as Error).message}`;
}
try {
  appendFileSync(join(dataDir, 'checker.log'), `${JSON.stringify({ time: new Date().toISOString(), ...attempt, ok, reason })}\n`);
} catch (err) {
  // A checker that cannot record attempts would make tests lie; fail closed.
  process.stderr.write(`cannot write checker.log: ${(err as Error).message}\n`);
  ok = false;
}
process.exit(ok ? 0 : 1);

function readToken(): string {
  let raw: Buffer;
  try {
    raw = readFileSync(0);
  } catch {
    throw new Rejection('no token on stdin');
  }
  // pam_exec terminates the authtok with a NUL (some versions don't); cut at
  // the first one.
  const nul = raw.indexOf(0);
  const bytes = nul === -1 ? raw : raw.subarray(0, nul);
  if (bytes.length === 0) throw new Rejection('empty token');
  if (bytes.length >= PAM_AUTHTOK_LIMIT) {
    // Not an RDS rule: pam_exec silently truncated it, so it cannot verify.
    throw new Rejection(`token is ${bytes.length} bytes; pam_exec truncates at ${PAM_AUTHTOK_LIMIT}`);
  }
  return bytes.toString('utf8');
}

/** Throws a Rejection describing the first problem, or returns if the token is valid. */
function verify(token: string, config: CheckerConfig, attempt: Attempt, now: Date): void {
  const slash = token.indexOf('/');
  if (slash <= 0) throw new Rejection('malformed token: no host');
  const host = token.slice(0, slash);
  attempt.host = host;
  const rest = token.slice(slash);
  if (!rest.startsWith('/?')) throw new Rejection('malformed token: path must be /');
  const params = parseQuery(rest.slice(2));

  const required = (name: string): string => {
    const v = params.get(name);
    if (v === undefined) throw new Rejection(`missing ${name}`);
    return v;
  };

  // Credential scope first so the log can name the key even on later failures.
  const credential = required('X-Amz-Credential').split('/');
  if (credential.length !== 5) throw new Rejection('malformed X-Amz-Credential');
  const [accessKeyId, scopeDate, region, service, terminator] = credential as [string, string, string, string, string];
  attempt.accessKeyId = accessKeyId;
  attempt.region = region;

  if (required('Action') !== 'connect') throw new Rejection('Action must be connect');
  if (required('X-Amz-Algorithm') !== ALGORITHM) throw new Rejection('unsupported X-Amz-Algorithm');
  if (terminator !== 'aws4_request') throw new Rejection('malformed X-Amz-Credential');
  if (service !== SERVICE) throw new Rejection(`wrong service ${service}`);
  if (host.toLowerCase() !== config.host.toLowerCase()) throw new Rejection('wrong host');
  if (region !== config.region) throw new Rejection('wrong region');
  if (required('DBUser') !== attempt.user) throw new Rejection('DBUser does not match login user');
  if (required('X-Amz-SignedHeaders') !== 'host') {
    // Only the host header exists in this "request"; anything else cannot be checked.
    throw new Rejection('X-Amz-SignedHeaders must be host');
  }

  const amzDate = required('X-Amz-Date');
  const signedAt = parseAmzDate(amzDate);
  if (amzDate.slice(0, 8) !== scopeDate) throw new Rejection('credential scope date does not match X-Amz-Date');
  const expiresText = required('X-Amz-Expires');
  if (!/^[0-9]{1,6}$/.test(expiresText)) throw new Rejection('malformed X-Amz-Expires');
  const expires = Number(expiresText);
  if (expires > MAX_EXPIRES_S) throw new Rejection(`X-Amz-Expires ${expires} > ${MAX_EXPIRES_S}`);
  const ageS = (now.getTime() - signedAt.getTime()) / 1000;
  if (ageS > expires) throw new Rejection('token expired');
  if (-ageS > MAX_FUTURE_SKEW_S) throw new Rejection('X-Amz-Date is in the future');

  const key = config.keys[accessKeyId];
  if (key === undefined) throw new Rejection('unknown access key');
  const securityToken = params.get('X-Amz-Security-Token');
  if (key.sessionToken === undefined) {
    if (securityToken !== undefined) throw new Rejection('unexpected X-Amz-Security-Token');
  } else if (securityToken === undefined) {
    throw new Rejection('missing X-Amz-Security-Token');
  } else if (!constantTimeEqual(securityToken, key.sessionToken)) {
    throw new Rejection('wrong X-Amz-Security-Token');
  }

  const signature = required('X-Amz-Signature');
  const canonicalQuery = [...params]
    .filter(([k]) => k !== 'X-Amz-Signature')
    .map(([k, v]) => [rfc3986(k), rfc3986(v)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const canonicalRequest = ['GET', '/', canonicalQuery, `host:${host}`, '', 'host', EMPTY_PAYLOAD_SHA256].join('\n');
  const scope = `${scopeDate}/${region}/${SERVICE}/aws4_request`;
  const stringToSign = [ALGORITHM, amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
  let signingKey = hmac(`AWS4${key.secret}`, scopeDate);
  for (const part of [region, SERVICE, 'aws4_request']) signingKey = hmac(signingKey, part);
  const expected = hmac(signingKey, stringToSign).toString('hex');
  if (!constantTimeEqual(signature, expected)) throw new Rejection('signature mismatch');
}

/**
 * A test JWT (HS256 with the configured key) as Azure (aud, upn: the principal, case-sensitive) or Cloud
 * SQL (scope, email: the user, or a service account's user plus .gserviceaccount.com) would accept it.
 * `host` in the log says which: "azure" or "gcp"; `accessKeyId` names the principal.
 */
function verifyJwt(token: string, config: CheckerConfig, attempt: Attempt, now: Date): void {
  const parts = token.split('.');
  if (parts.length !== 3 || config.jwtKey === undefined) throw new Rejection('malformed token');
  const [header, payload, signature] = parts as [string, string, string];
  const expected = createHmac('sha256', Buffer.from(config.jwtKey, 'base64')).update(`${header}.${payload}`).digest('base64url');
  if (!constantTimeEqual(signature, expected)) throw new Rejection('signature mismatch');
  let claims: Record<string, unknown>;
  try {
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new Rejection('malformed claims');
  }
  const exp = typeof claims.exp === 'number' ? claims.exp : 0;
  if (exp * 1000 <= now.getTime()) throw new Rejection('token expired');
  if (typeof claims.aud === 'string') {
    attempt.host = 'azure';
    attempt.accessKeyId = String(claims.upn ?? '');
    if (claims.aud !== AZURE_AUDIENCE) throw new Rejection(`wrong audience ${claims.aud}`);
    if (claims.upn !== attempt.user) throw new Rejection('principal does not match login user');
    return;
  }
  attempt.host = 'gcp';
  attempt.accessKeyId = String(claims.email ?? '');
  const scopes = typeof claims.scope === 'string' ? claims.scope.split(' ') : [];
  if (!scopes.includes(CLOUD_SQL_SCOPE)) throw new Rejection('missing sqlservice.login scope');
  if (claims.email !== attempt.user && claims.email !== `${attempt.user}.gserviceaccount.com`)
    throw new Rejection('principal does not match login user');
}

/** Parses a query string strictly: percent-decoding, no `+` as space, no duplicates. */
function parseQuery(query: string): Map<string, string> {
  const params = new Map<string, string>();
  if (query === '') return params;
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    let name: string;
    let value: string;
    try {
      name = decodeURIComponent(eq === -1 ? pair : pair.slice(0, eq));
      value = eq === -1 ? '' : decodeURIComponent(pair.slice(eq + 1));
    } catch {
      throw new Rejection('malformed token: bad percent-encoding');
    }
    if (params.has(name)) throw new Rejection(`duplicate parameter ${name}`);
    params.set(name, value);
  }
  return params;
}

function parseAmzDate(s: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (m === null) throw new Rejection('malformed X-Amz-Date');
  const [, y, mo, d, h, mi, se] = m.map(Number) as [number, number, number, number, number, number, number];
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, se));
  if (Number.isNaN(date.getTime()) || date.getUTCDate() !== d) throw new Rejection('malformed X-Amz-Date');
  return date;
}

/** SigV4 URI encoding: RFC 3986 unreserved characters stay, everything else is %XX. */
function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function sha256Hex(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

function constantTimeEqual(a: string, b: string): boolean {
  // Hash first so lengths are equal and the comparison leaks nothing about them.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/**
 * Test hook: if <datadir>/reject-next holds n > 0, reject this (otherwise
 * valid) login and store n-1. A mkdir lock keeps concurrent logins from
 * consuming the same count twice.
 */
function consumeForcedRejection(dir: string): boolean {
  const file = join(dir, 'reject-next');
  try {
    statSync(file);
  } catch {
    return false; // the common case: no file, no lock needed
  }
  const lock = join(dir, 'reject-next.lock');
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (Date.now() > deadline) throw new Error('timed out waiting for reject-next.lock');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
  }
  try {
    let n: number;
    try {
      n = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    } catch {
      return false;
    }
    if (!(n > 0)) return false;
    // Write-then-rename so a reader never sees a half-written count.
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, `${n - 1}\n`);
    renameSync(tmp, file);
    return true;
  } finally {
    rmdirSync(lock);
  }
}
