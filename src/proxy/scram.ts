// The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) for --client-password-file: clients prove they
// know the password before anything goes upstream. Only SCRAM-SHA-256 is offered (no -PLUS: channel
// binding would tie the proof to the local TLS link, which libpq handles only with a server certificate
// hash; the password alone is what this guards).
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { AuthCode, BackendCode, SqlState } from '../protocol/constants.js';
import { WireError } from '../protocol/errors.js';
import type { Inbox } from './inbox.js';

export const SCRAM_SHA_256 = 'SCRAM-SHA-256';
const ITERATIONS = 4096;
/** A SASL message from a client is small; more is an attack or a bug. */
const MAX_SASL_MESSAGE = 8 * 1024;
const PASSWORD_MESSAGE = 0x70; // p

/** What the proxy keeps of the password: the SCRAM keys, never the password itself. */
export class ScramSecret {
  private constructor(
    readonly salt: Buffer,
    readonly iterations: number,
    readonly storedKey: Buffer,
    readonly serverKey: Buffer,
  ) {}

  static fromPassword(password: string, salt = randomBytes(16), iterations = ITERATIONS): ScramSecret {
    const salted = pbkdf2Sync(saslprep(password), salt, iterations, 32, 'sha256');
    const clientKey = hmac(salted, 'Client Key');
    return new ScramSecret(salt, iterations, sha256(clientKey), hmac(salted, 'Server Key'));
  }

  /** Read a password file (one line; a trailing newline is not part of it). */
  static fromFile(path: string): { secret: ScramSecret; warning?: string } {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new Error(`--client-password-file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const password = text.replace(/\r?\n$/, '');
    if (password === '' || password.includes('\n')) throw new Error(`--client-password-file ${path}: one line, the password, is expected`);
    const mode = statSync(path).mode & 0o777;
    return {
      secret: ScramSecret.fromPassword(password),
      ...(mode & 0o077 ? { warning: `--client-password-file ${path} can be read by other users (mode ${mode.toString(8)}): chmod 600 it` } : {}),
    };
  }
}

/**
 * SASLprep (RFC 4013) as libpq and node-pg apply it to the password: "commonly mapped to nothing"
 * characters (RFC 3454 B.1) removed, non-ASCII spaces (C.1.2) made spaces, then NFKC. (When the result
 * holds prohibited characters libpq falls back to the raw password; that rare case is not mirrored.)
 */
export function saslprep(password: string): string {
  return password
    .replace(/[\u00AD\u034F\u1806\u180B-\u180D\u200B-\u200D\u2060\uFE00-\uFE0F\uFEFF]/g, '')
    .replace(/[\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]/g, ' ')
    .normalize('NFKC');
}

const hmac = (key: Buffer, text: string | Buffer) => createHmac('sha256', key).update(text).digest();
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();

function authMessage(code: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(1 + 4 + 4 + body.length);
  out[0] = BackendCode.Authentication;
  out.writeUInt32BE(4 + 4 + body.length, 1);
  out.writeUInt32BE(code, 5);
  body.copy(out, 9);
  return out;
}

/** A client message of type 'p' (SASLInitialResponse / SASLResponse), whole. */
async function readPasswordMessage(inbox: Inbox): Promise<Buffer> {
  await inbox.fill(5);
  const type = inbox.buffered[0];
  const length = inbox.buffered.readUInt32BE(1);
  if (type !== PASSWORD_MESSAGE) throw protocol(`expected a SASL response ('p'), got message type ${JSON.stringify(String.fromCharCode(type!))}`);
  if (length < 4 || length > MAX_SASL_MESSAGE) throw protocol(`invalid SASL message length ${length}`);
  await inbox.fill(1 + length);
  const body = Buffer.from(inbox.buffered.subarray(5, 1 + length));
  inbox.consume(1 + length);
  return body;
}

const protocol = (message: string) => new WireError(SqlState.ProtocolViolation, message, { reason: 'client_auth' });

/** Parse "a=1,b=2" attribute lists; values may contain '=' but not ','. */
function attributes(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq !== 1) throw protocol(`malformed SCRAM attribute ${JSON.stringify(part.slice(0, 20))}`);
    // RFC 5802 5.1: a mandatory extension the server does not know must fail the exchange.
    if (part[0] === 'm') throw protocol('SCRAM mandatory extensions (m=) are not supported');
    out.set(part[0]!, part.slice(2));
  }
  return out;
}

/**
 * Run the SCRAM exchange with the client. Resolves when the client proved the password; rejects with
 * FATAL 28P01 when it did not (the same words PostgreSQL uses), 08P01 when it spoke nonsense.
 */
export async function authenticateClient(client: Duplex, inbox: Inbox, user: string, secret: ScramSecret): Promise<void> {
  const failed = () => new WireError(SqlState.InvalidPassword, `password authentication failed for user "${user}"`, { reason: 'client_password' });
  client.write(authMessage(AuthCode.SASL, Buffer.from(`${SCRAM_SHA_256}\0\0`)));

  // SASLInitialResponse: mechanism\0, int32 length, client-first-message.
  const initial = await readPasswordMessage(inbox);
  const nul = initial.indexOf(0);
  if (nul < 0 || initial.length < nul + 5) throw protocol('malformed SASLInitialResponse');
  const mechanism = initial.subarray(0, nul).toString();
  if (mechanism !== SCRAM_SHA_256) throw protocol(`SASL mechanism ${JSON.stringify(mechanism)} is not offered; only ${SCRAM_SHA_256}`);
  const declared = initial.readInt32BE(nul + 1);
  if (declared !== initial.length - (nul + 5)) throw protocol('malformed SASLInitialResponse length');
  const clientFirst = initial.subarray(nul + 5).toString();
  const gs2 = /^([ny]),,/.exec(clientFirst);
  if (!gs2) throw protocol(clientFirst.startsWith('p=') ? 'channel binding is not offered: use channel_binding=disable or prefer' : 'malformed SCRAM client-first-message');
  const gs2Header = gs2[0];
  const clientFirstBare = clientFirst.slice(gs2Header.length);
  const clientNonce = attributes(clientFirstBare).get('r');
  if (!clientNonce || !/^[\x21-\x2b\x2d-\x7e]+$/.test(clientNonce)) throw protocol('malformed SCRAM nonce');

  const nonce = clientNonce + randomBytes(18).toString('base64');
  const serverFirst = `r=${nonce},s=${secret.salt.toString('base64')},i=${secret.iterations}`;
  client.write(authMessage(AuthCode.SASLContinue, Buffer.from(serverFirst)));

  // SASLResponse: client-final-message.
  const clientFinal = (await readPasswordMessage(inbox)).toString();
  const proofAt = clientFinal.lastIndexOf(',p=');
  if (proofAt < 0) throw protocol('malformed SCRAM client-final-message');
  const withoutProof = clientFinal.slice(0, proofAt);
  const final = attributes(withoutProof);
  if (final.get('c') !== Buffer.from(gs2Header).toString('base64') || final.get('r') !== nonce) throw failed();
  const proof = Buffer.from(clientFinal.slice(proofAt + 3), 'base64');
  const message = `${clientFirstBare},${serverFirst},${withoutProof}`;
  const signature = hmac(secret.storedKey, message);
  if (proof.length !== signature.length) throw failed();
  const clientKey = Buffer.alloc(proof.length);
  for (let i = 0; i < proof.length; i++) clientKey[i] = proof[i]! ^ signature[i]!;
  if (!timingSafeEqual(sha256(clientKey), secret.storedKey)) throw failed();
  client.write(authMessage(AuthCode.SASLFinal, Buffer.from(`v=${hmac(secret.serverKey, message).toString('base64')}`)));
}
