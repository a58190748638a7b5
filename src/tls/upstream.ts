// TLS to the database, every cloud's: the context made from a CA bundle (or Node's public roots), and a
// --ca-file read and checked once. What each cloud trusts by default is its own (src/aws/ca.ts: the RDS
// CAs; Azure: Node's roots; Cloud SQL: the instance's CA from the SQL Admin API).
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContext } from 'node:tls';

/**
 * Key-exchange groups, P-256 first. PostgreSQL (and so RDS) accepts only `ssl_ecdh_curve`, prime256v1 by
 * default; OpenSSL's client offers an X25519 key share first, which costs a HelloRetryRequest, one more
 * round trip to the database on every login. The others stay for servers configured for them.
 */
export const UPSTREAM_GROUPS = 'P-256:X25519:P-384:P-521';

/**
 * A context for upstream TLS, every cloud's: TLS 1.2 at least (docs/protocol.md C2), P-256 first, trusting
 * `ca` (undefined: Node's public roots).
 */
export function upstreamContext(ca: readonly string[] | undefined): SecureContext {
  return createSecureContext({ ...(ca ? { ca: [...ca] } : {}), minVersion: 'TLSv1.2', ecdhCurve: UPSTREAM_GROUPS });
}

/** The PEM certificates of a --ca-file; the errors name the file. */
export function readCaFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`--ca-file ${path}: ${(err as Error).message}`, { cause: err });
  }
  const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!pems) throw new Error(`--ca-file ${path}: no PEM certificate in the file`);
  // OpenSSL skips a block it cannot read: a bundle of such blocks would trust nothing, and say nothing.
  pems.forEach((pem, i) => {
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new Error(`--ca-file ${path}: certificate ${i + 1} of ${pems.length} cannot be read (${(err as Error).message})`, {
        cause: err,
      });
    }
  });
  return pems;
}

/**
 * The trust made from each CA file (none: `undefined`), made again only when the file's certificates
 * changed: a SecureContext parses its CAs once, not per connection. The file is read each time an
 * instance's connector is made (at start and on every reload), so a bundle replaced at the same path is
 * what new connections verify against, and one that cannot be read refuses the reload.
 */
export function trustByFile<T>(make: (caFile: string | undefined, ca: readonly string[]) => T): (caFile: string | undefined) => T {
  const made = new Map<string, { text: string; trust: T }>();
  return (caFile) => {
    const ca = caFile ? readCaFile(caFile) : [];
    const text = ca.join('\n');
    const key = caFile ?? '';
    let entry = made.get(key);
    if (entry?.text !== text) made.set(key, (entry = { text, trust: make(caFile, ca) }));
    return entry.trust;
  };
}
