// The few SQL commands a transaction-pooling relay must recognise in a client's Query or Parse: the ones
// that drop the client's prepared statements, which live on servers under the proxy's names. Only a
// command alone in its message is recognised (whitespace and one trailing semicolon allowed); anything
// else passes as it is, and the server's CommandComplete tags tell the rest.

export type StatementCommand =
  | { readonly kind: 'deallocate'; readonly name: string }
  | { readonly kind: 'deallocate-all' }
  | { readonly kind: 'discard-all' };

const DEALLOCATE = /^\s*deallocate\s+(?:prepare\s+)?(all|[a-z_\u0080-\uffff][\w$\u0080-\uffff]*|"(?:[^"]|"")+")\s*;?\s*$/i;
const DISCARD_ALL = /^\s*discard\s+all\s*;?\s*$/i;

/** What `sql` does to prepared statements, if it is one of the commands that drop them. */
export function statementCommand(sql: string): StatementCommand | undefined {
  const first = sql.charCodeAt(sql.search(/\S/));
  // Most queries start with neither letter: no regular expression runs for them.
  if (first !== 0x44 && first !== 0x64) return undefined; // D d
  if (DISCARD_ALL.test(sql)) return { kind: 'discard-all' };
  const match = DEALLOCATE.exec(sql);
  if (!match) return undefined;
  const name = match[1]!;
  if (name.startsWith('"')) return { kind: 'deallocate', name: name.slice(1, -1).replaceAll('""', '"') };
  if (name.toLowerCase() === 'all') return { kind: 'deallocate-all' };
  // PostgreSQL folds an unquoted identifier's ASCII letters to lower case.
  return { kind: 'deallocate', name: name.replace(/[A-Z]+/g, (s) => s.toLowerCase()) };
}
