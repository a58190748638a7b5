// Azure Database for PostgreSQL server names.

/** Azure Database for PostgreSQL (flexible and single server): NAME.postgres.database.azure.com. */
const AZURE_NAME = /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\.(?:privatelink\.)?postgres\.database\.azure\.com\.?$/i;

/** Whether a host name is an Azure Database for PostgreSQL server name. */
export const isAzureServerName = (host: string): boolean => AZURE_NAME.test(host);
