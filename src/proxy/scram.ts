// The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) for --client-password-file: clients prove they
// know the password before anything goes upstream. Only SCRAM-SHA-256 is offered (no -PLUS: channel
// binding would tie the proof to the local TLS link, which libpq handles only with a server certificate
// hash; the password alone is what this guards).
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { AuthCode, BackendCode, FrontendCode, SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { InboxClosed, type Inbox } from '../net/inbox.js';

export const SCRAM_SHA_256 = 'SCRAM-SHA-256';
const ITERATIONS = 4096;
/** A SASL message from a client is small; more is an attack or a bug. */
const MAX_SASL_MESSAGE = 8 * 1024;

/** What the proxy keeps of the password: the SCRAM keys, never the password itself. */
export class ScramSecret {
  /** Wrong guesses at this password, per client address: how long each verdict is held back. */
  readonly failures = new FailedPasswords();

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
      ...(mode & 0o077
        ? { warning: `--client-password-file ${path} can be read by other users (mode ${mode.toString(8)}): chmod 600 it` }
        : {}),
    };
  }
}

/**
 * SASLprep (RFC 4013) as libpq and node-pg apply it to the password: "commonly mapped to nothing"
 * characters (RFC 3454 B.1) removed, non-ASCII spaces (C.1.2) made spaces, then NFKC. (When the result
 * holds prohibited characters libpq falls back to the raw password; that rare case is not mirrored.)
 */
export function saslprep(password: string): string {
  // biome-ignore lint/suspicious/noMisleadingCharacterClass: each listed code point is removed on its own (RFC 3454 B.1), combining or not.
  const mappedToNothing = /[\u00AD\u034F\u1806\u180B-\u180D\u200B-\u200D\u2060\uFE00-\uFE0F\uFEFF]/g;
  return password
    .replace(mappedToNothing, '')
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
  if (type !== FrontendCode.Password)
    throw protocol(`expected a SASL response ('p'), got message type ${JSON.stringify(String.fromCharCode(type!))}`);
  if (length < 4 || length > MAX_SASL_MESSAGE) throw protocol(`invalid SASL message length ${length}`);
  await inbox.fill(1 + length);
  const body = Buffer.from(inbox.buffered.subarray(5, 1 + length));
  inbox.consume(1 + length);
  return body;
}

const protocol = (message: string) => new WireError(SqlState.ProtocolViolation, message, { reason: Failure.ClientAuth });

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

/** Who is asking, for the delays after wrong passwords (FailedPasswords). */
export interface PasswordPeer {
  /** The client's TCP address, read before any TLS wraps the socket; undefined on a unix socket. */
  readonly address: string | undefined;
  /** The startup deadline and the client's going away: a verdict still held then is never told. */
  readonly signal: AbortSignal;
  readonly log: Logger;
}

/**
 * Run the SCRAM exchange with the client. Resolves when the client proved the password; rejects with
 * FATAL 28P01 when it did not (the same words PostgreSQL uses), 08P01 when it spoke nonsense. With a
 * `peer`, the verdict waits as long as the failures on record from its address say (FailedPasswords);
 * without one (unit tests, fuzzing) it is told at once.
 */
export async function authenticateClient(
  client: Duplex,
  inbox: Inbox,
  user: string,
  secret: ScramSecret,
  peer?: PasswordPeer,
): Promise<void> {
  const failed = () =>
    new WireError(SqlState.InvalidPassword, `password authentication failed for user "${user}"`, { reason: Failure.ClientPassword });
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
  if (!gs2)
    throw protocol(
      clientFirst.startsWith('p=')
        ? 'channel binding is not offered: use channel_binding=disable or prefer'
        : 'malformed SCRAM client-first-message',
    );
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
  const message = `${clientFirstBare},${serverFirst},${withoutProof}`;
  const proven =
    final.get('c') === Buffer.from(gs2Header).toString('base64') &&
    final.get('r') === nonce &&
    provesKey(Buffer.from(clientFinal.slice(proofAt + 3), 'base64'), hmac(secret.storedKey, message), secret.storedKey);
  if (peer) await holdVerdict(client, secret.failures, proven, peer);
  if (!proven) throw failed();
  client.write(authMessage(AuthCode.SASLFinal, Buffer.from(`v=${hmac(secret.serverKey, message).toString('base64')}`)));
}

/** ClientProof XOR ClientSignature is the ClientKey; its hash must be the StoredKey (RFC 5802 3). */
function provesKey(proof: Buffer, signature: Buffer, storedKey: Buffer): boolean {
  if (proof.length !== signature.length) return false;
  const clientKey = Buffer.alloc(proof.length);
  for (let i = 0; i < proof.length; i++) clientKey[i] = proof[i]! ^ signature[i]!;
  return timingSafeEqual(sha256(clientKey), storedKey);
}

/**
 * Record the verdict, then wait as long as the address's failures say. The session's end (the startup
 * timeout, a shutdown) or the client's hanging up ends the wait, and the verdict is never told.
 */
async function holdVerdict(client: Duplex, failures: FailedPasswords, proven: boolean, peer: PasswordPeer): Promise<void> {
  const { holdMs, before } = failures.verdict(peer.address, proven);
  if (holdMs <= 0) return;
  // Not whether the password was right: the line is written before the verdict is told.
  peer.log.info(
    { clientPassword: { failuresBefore: before, heldMs: Math.round(holdMs) } },
    'client password: verdict held back after wrong passwords from this address',
  );
  // A hang-up is a FIN: the listener allows half-open sockets, so no 'close' (the session's own signal) follows it.
  const hungUp = new AbortController();
  const onEnd = () => hungUp.abort(new InboxClosed());
  if (client.readableEnded) onEnd();
  else client.once('end', onEnd);
  const stop = AbortSignal.any([peer.signal, hungUp.signal]);
  try {
    // Rejects only when `stop` aborts: its reason ends the session.
    await sleep(holdMs, undefined, { signal: stop }).catch(() => {
      throw stop.reason;
    });
  } finally {
    client.off('end', onEnd);
  }
}

/** The hold once an address has one failure on record; it doubles with each further one, up to MAX_DELAY_MS. */
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 4_000;
/** An address with no failure for this long starts afresh. */
const FORGET_AFTER_MS = 10 * 60_000;

export interface FailedPasswordsOptions {
  /** Addresses remembered at most: beyond, new ones share one record (default 10,000: about 2 MB of heap). */
  readonly maxAddresses?: number;
  /** Milliseconds on a monotonic clock (tests: a fake one). */
  readonly now?: () => number;
}

interface FailureRecord {
  /** Consecutive wrong passwords, in the order their verdicts are told; a right one not yet told counts as one. */
  failures: number;
  /** When the last verdict given out is told: the next one waits its own delay after it. */
  toldAt: number;
  lastFailureAt: number;
  /** A right password whose verdict is not yet told: the failures up to it are cleared at `at`, not before. */
  clear?: { at: number; failures: number };
}

/** The record new addresses share once the table is full. */
const OVERFLOW = '*';

/**
 * A wrong client password costs the guesser time, as PostgreSQL's auth_delay and pgbouncer's per-address
 * limits make it: with failures on record for an address, its next verdict waits 250 ms, doubling
 * with each further failure up to 4 s; a right password clears the record once its own verdict is told
 * (until then it counts as a failure, so nothing told before its delay has passed tells it apart). An
 * address with no failure
 * on record is never held: an honest client's first attempt, and every one after a right password, is
 * answered at once.
 *
 * Two things make the delay real rather than cosmetic. A right password waits as long as a wrong one:
 * were only failures slow, a guesser would hang up after a few ms of silence and try the next password.
 * And the verdicts for one address are queued one delay apart, so opening many connections at once does
 * not multiply the rate; a verdict queued past the client's startup timeout is never told.
 *
 * Memory is bounded: records are forgotten 10 minutes after their last failure, and when `maxAddresses`
 * are held, new addresses share one record, which a flood of addresses cannot use to push out others.
 */
export class FailedPasswords {
  /** Ordered by last failure, oldest first (a failure re-inserts its record), so expiry sweeps from the front. */
  private readonly records = new Map<string, FailureRecord>();
  private readonly maxAddresses: number;
  private readonly now: () => number;

  constructor(options: FailedPasswordsOptions = {}) {
    this.maxAddresses = options.maxAddresses ?? 10_000;
    this.now = options.now ?? (() => performance.now());
  }

  /** Addresses with failures on record. */
  get size(): number {
    return this.records.size;
  }

  /** The hold for an address with `failures` consecutive failures on record. */
  private delayAfter(failures: number): number {
    return failures === 0 ? 0 : Math.min(FIRST_DELAY_MS * 2 ** (failures - 1), MAX_DELAY_MS);
  }

  /**
   * Record a verdict for `address` (undefined: a unix-socket client). Returns how long to hold it back
   * and the consecutive failures on record before it.
   */
  verdict(address: string | undefined, proven: boolean): { holdMs: number; before: number } {
    const now = this.now();
    this.forgetOld(now);
    let key = addressKey(address);
    if (!this.records.has(key) && this.records.size >= this.maxAddresses) key = OVERFLOW;
    const record = this.cleared(key, now);
    const before = record?.failures ?? 0;
    const tellAt = Math.max(now, record?.toldAt ?? now) + this.delayAfter(before);
    this.records.delete(key);
    // A right password after failures is queued like a wrong one, and the verdicts behind it are held as
    // if it were wrong, until its own verdict is told: were the record cleared at once, the next guess
    // would be answered at once, and a guesser hanging up each attempt early would read from that which
    // guess before it was right.
    if (!proven || before > 0)
      this.records.set(key, {
        failures: before + 1,
        toldAt: tellAt,
        lastFailureAt: now,
        ...(proven ? { clear: { at: tellAt, failures: before + 1 } } : record?.clear ? { clear: record.clear } : {}),
      });
    return { holdMs: tellAt - now, before };
  }

  /** The record for `key` once a right password's verdict, told by `now`, has cleared the failures before it. */
  private cleared(key: string, now: number): FailureRecord | undefined {
    const record = this.records.get(key);
    if (!record?.clear || now < record.clear.at) return record;
    record.failures -= record.clear.failures;
    delete record.clear;
    // Nothing queued behind the right password: the address starts afresh.
    if (record.failures === 0) {
      this.records.delete(key);
      return undefined;
    }
    return record;
  }

  private forgetOld(now: number): void {
    for (const [key, record] of this.records) {
      if (now - record.lastFailureAt < FORGET_AFTER_MS) break;
      this.records.delete(key);
    }
  }
}

/**
 * The key failures are counted under. An IPv6 client counts by its /64, which one host commonly holds
 * whole (a key per address would give it 2^64 fresh starts); an IPv4-mapped IPv6 address as the IPv4
 * address it is. Unix-socket clients share one key: they have no address, the socket's file mode already
 * decides which local users may connect, and a local guesser is slowed like any other.
 */
export function addressKey(address: string | undefined): string {
  if (!address) return 'local';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head, tail] = address.split('%')[0]!.split('::');
  // A dotted IPv4 tail stands for two groups.
  const groups = (part: string | undefined) => (part ? part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])) : []);
  const left = groups(head);
  const right = groups(tail);
  const all = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return `${all
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
