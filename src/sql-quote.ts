// Names and strings as PostgreSQL reads them, for the SQL every cloud's advice quotes (a GRANT, a role
// created for a principal).

/** "user" quoted as PostgreSQL quotes an identifier. */
export const quoteIdent = (name: string): string => `"${name.replaceAll('"', '""')}"`;

/** 'text' quoted as a PostgreSQL string literal. */
export const quoteLiteral = (text: string): string => `'${text.replaceAll("'", "''")}'`;
