// The few SQL commands a transaction-pooling relay must recognise in a client's Query or Parse: the ones
// that drop the client's prepared statements, which live on servers under the proxy's names. Only a
// command alone in its message is recognised (whitespace, comments and one trailing semicolon allowed);
// anything else passes as it is, and the server's CommandComplete tags tell the rest.

import { identifierKey } from './statements.js';

/** A command that drops statements; a DEALLOCATE's `name` is the key of the one it names (statements.ts, identifierKey). */
export type StatementCommand =
  | { readonly kind: 'deallocate'; readonly name: string }
  | { readonly kind: 'deallocate-all' }
  | { readonly kind: 'discard-all' };

const DEALLOCATE = /^\s*deallocate\s+(?:prepare\s+)?(all|[a-z_\u0080-\uffff][\w$\u0080-\uffff]*|"(?:[^"]|"")+")\s*;?\s*$/i;
const DISCARD_ALL = /^\s*discard\s+all\s*;?\s*$/i;

/** What `sql` does to prepared statements, if it is one of the commands that drop them. */
export function statementCommand(text: string): StatementCommand | undefined {
  const sql = withoutComments(text);
  const first = sql.charCodeAt(sql.search(/\S/));
  // Most queries start with neither letter: no regular expression runs for them.
  if (first !== 0x44 && first !== 0x64) return undefined; // D d
  if (DISCARD_ALL.test(sql)) return { kind: 'discard-all' };
  const match = DEALLOCATE.exec(sql);
  if (!match) return undefined;
  const name = match[1]!;
  if (name.startsWith('"')) return { kind: 'deallocate', name: identifierKey(name.slice(1, -1).replaceAll('""', '"')) };
  if (name.toLowerCase() === 'all') return { kind: 'deallocate-all' };
  // PostgreSQL folds an unquoted identifier's ASCII letters to lower case.
  return { kind: 'deallocate', name: identifierKey(name.replace(/[A-Z]+/g, (s) => s.toLowerCase())) };
}

/**
 * `sql` with its comments (`-- ...` to the line's end, `/* ... *\/` nested) blanked, when it has any
 * outside quotes; as it is otherwise (a quote or comment left open: the server will say what is wrong).
 */
function withoutComments(sql: string): string {
  if (!sql.includes('--') && !sql.includes('/*')) return sql;
  let out = '';
  let from = 0;
  for (let i = 0; i < sql.length; ) {
    const c = sql[i]!;
    if (c === "'" || c === '"') {
      const end = sql.indexOf(c, i + 1);
      if (end < 0) return sql;
      i = end + 1; // a doubled quote is two quoted runs: the same text
    } else if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i);
      out += `${sql.slice(from, i)} `;
      i = from = end < 0 ? sql.length : end + 1;
    } else if (c === '/' && sql[i + 1] === '*') {
      let depth = 1;
      let j = i + 2;
      while (depth > 0) {
        if (j >= sql.length) return sql;
        if (sql.startsWith('/*', j)) depth++, (j += 2);
        else if (sql.startsWith('*/', j)) depth--, (j += 2);
        else j++;
      }
      out += `${sql.slice(from, i)} `;
      i = from = j;
    } else i++;
  }
  return out + sql.slice(from);
}

/**
 * The statements of a simple Query, as PostgreSQL's parser cuts them: at semicolons outside quotes ('',
 * "", dollar quotes, E'' with its backslashes) and comments; empty ones dropped. Undefined when the text
 * ends inside a quote or comment (the server will say what is wrong; nothing is rewritten).
 */
export function splitStatements(sql: string): Array<{ readonly text: string; readonly start: number }> | undefined {
  const out: Array<{ text: string; start: number }> = [];
  let start = 0;
  let i = 0;
  const push = (end: number) => {
    const text = sql.slice(start, end);
    if (/\S/.test(text.replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, ''))) out.push({ text, start });
  };
  while (i < sql.length) {
    const c = sql[i]!;
    if (c === ';') {
      push(i);
      start = ++i;
    } else if (c === "'") {
      const escapes = i > 0 && /[eE]/.test(sql[i - 1]!) && (i === 1 || !/[\w$]/.test(sql[i - 2]!));
      i++;
      for (;;) {
        if (i >= sql.length) return undefined;
        if (escapes && sql[i] === '\\') i += 2;
        else if (sql[i] === "'") {
          if (sql[i + 1] === "'") i += 2;
          else break;
        } else i++;
      }
      i++;
    } else if (c === '"') {
      const end = sql.indexOf('"', i + 1);
      if (end < 0) return undefined;
      i = end + 1;
    } else if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? sql.length : end + 1;
    } else if (c === '/' && sql[i + 1] === '*') {
      let depth = 1;
      i += 2;
      while (depth > 0) {
        if (i >= sql.length) return undefined;
        if (sql.startsWith('/*', i)) depth++, (i += 2);
        else if (sql.startsWith('*/', i)) depth--, (i += 2);
        else i++;
      }
    } else if (c === '$' && (i === 0 || !/[\w$]/.test(sql[i - 1]!))) {
      const tag = /^\$(?:[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$/.exec(sql.slice(i))?.[0];
      if (!tag) {
        i++;
        continue;
      }
      const end = sql.indexOf(tag, i + tag.length);
      if (end < 0) return undefined;
      i = end + tag.length;
    } else i++;
  }
  push(sql.length);
  return out;
}
