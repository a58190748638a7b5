// AWS-looking credential sets for the stand-ins to issue and for tests to write
// into shared files or env. Nothing points the SDK here: these are values, not
// an endpoint.
//
// Session tokens are kept short (<= 40 chars) on purpose: the test database's
// pam_exec hands over at most 511 bytes of password, and a presigned RDS token
// embeds the session token.

import { randomInt } from 'node:crypto';

export interface IssuedCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiration: Date;
}

// Real key ids are base32 after the prefix; secrets are base64-ish.
const UPPER_ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const SECRET_CHARS = `${ALNUM}+/`;

function randomString(length: number, alphabet: string): string {
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

/** 20-char access key id: `ASIA` (temporary, the default) or `AKIA` (long-term) + 16. */
export function randomAccessKeyId(prefix: 'ASIA' | 'AKIA' = 'ASIA'): string {
  return prefix + randomString(16, UPPER_ALNUM);
}

/** 40-char secret access key. */
export function randomSecretAccessKey(): string {
  return randomString(40, SECRET_CHARS);
}

/** Short (32 chars) session token; real ones are hundreds of bytes (see the header). */
export function randomSessionToken(): string {
  return `ST${randomString(30, ALNUM)}`;
}

/** A temporary credential set valid for `lifetimeMs` (default 1 h); given fields are kept. */
export function makeCredentials(partial: Partial<IssuedCredentials> = {}, lifetimeMs = 3_600_000): IssuedCredentials {
  return {
    accessKeyId: partial.accessKeyId ?? randomAccessKeyId('ASIA'),
    secretAccessKey: partial.secretAccessKey ?? randomSecretAccessKey(),
    sessionToken: partial.sessionToken ?? randomSessionToken(),
    // Whole seconds, like AWS; an explicit expiration is sent as given.
    expiration: partial.expiration ?? new Date(Math.floor((Date.now() + lifetimeMs) / 1000) * 1000),
  };
}

/** RFC 3339 in UTC without `.000`, so whole seconds look like AWS's. */
export function awsTimestamp(d: Date): string {
  return d.toISOString().replace(/\.000Z$/, 'Z');
}
