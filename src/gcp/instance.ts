// Cloud SQL instances by their connection name, and their kinds of address.

/** A Cloud SQL instance, by its connection name `PROJECT:REGION:INSTANCE`. */
export interface CloudSqlInstance {
  /** The project ID, domain-scoped ones included (`example.com:project`). */
  readonly project: string;
  readonly region: string;
  readonly instance: string;
  /** `PROJECT:REGION:INSTANCE`, as the console shows it. */
  readonly connectionName: string;
}

/** A Cloud SQL instance's kinds of address, as cloud-sql-proxy names them (--ip-type). */
export const IP_TYPES = ['public', 'private', 'psc'] as const;
export type IpType = (typeof IP_TYPES)[number];

/**
 * `[DOMAIN:]PROJECT:REGION:INSTANCE[:PORT]`: project IDs are 6 to 30 lowercase letters, digits and hyphens
 * (a domain-scoped project carries its domain first), regions like us-central1, instance names start with
 * a letter. The port (default 5432) is for a server reached elsewhere than Cloud SQL's own port.
 */
const CLOUD_SQL_NAME = /^((?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]):([a-z]+-[a-z]+\d+):([a-z][a-z0-9-]{0,97})(?::(\d{1,5}))?$/;

/** A Cloud SQL connection name and the port, or undefined when `text` is not one. */
export function parseCloudSqlName(text: string): { instance: CloudSqlInstance; port: number | undefined } | undefined {
  const match = CLOUD_SQL_NAME.exec(text.trim());
  if (!match) return undefined;
  const [, project, region, instance, port] = match as unknown as [string, string, string, string, string | undefined];
  return {
    instance: { project, region, instance, connectionName: `${project}:${region}:${instance}` },
    port: port === undefined ? undefined : Number(port),
  };
}
