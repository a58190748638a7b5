// RDS endpoint names: the region they carry, and whether a name is one a token can be signed for.
/**
 * The region in an RDS endpoint name: `name.id.REGION.rds.amazonaws.com` (instance, cluster, reader,
 * RDS Proxy), including China's `.amazonaws.com.cn`. Undefined for anything else.
 */
export function regionFromEndpoint(host: string): string | undefined {
  const match = /\.([a-z]{2}(?:-[a-z]+)+-\d+)\.rds\.amazonaws\.com(?:\.cn)?\.?$/i.exec(host);
  return match?.[1]?.toLowerCase();
}

/** Whether the name looks like an RDS endpoint, the only kind of name a token can be signed for. */
export const isRdsEndpointName = (host: string): boolean => regionFromEndpoint(host) !== undefined;
