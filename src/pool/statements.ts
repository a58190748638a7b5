// Named prepared statements in transaction pooling. A client's "s1" lives on each server it lands on
// under a name the proxy chose: one per distinct statement (the SQL and parameter types), shared by every
// client that prepares the same thing, as pgbouncer's max_prepared_statements does. Each server keeps at
// most a set number, least recently used closed first.
import { Frontend, frontendMessage } from '../protocol/frontend.js';
import { HEADER_SIZE } from '../protocol/constants.js';

/**
 * How PostgreSQL tells statements (and portals) apart: by the first 63 bytes of their names (NAMEDATALEN - 1,
 * the key of its hash tables), so longer names that agree there are one. The proxy keys a client's names
 * by those bytes, one character per byte (latin1): a name's key is its first 63 bytes as they came, a cut
 * through a character included, and distinct bytes are never merged (exact where the client's encoding is
 * the server's, UTF-8 by default; PostgreSQL counts the bytes after converting them).
 */
export const NAME_BYTES = 63;

/**
 * The key of a name in a SQL command (`DEALLOCATE name`): PostgreSQL's parser cuts an identifier back to
 * whole characters within 63 bytes (UTF-8 here), and looks that up.
 */
export function identifierKey(identifier: string): string {
  const bytes = Buffer.from(identifier, 'utf8');
  let end = Math.min(bytes.length, NAME_BYTES);
  // A continuation byte just past the cut: the character it belongs to started before it, and goes.
  if (end < bytes.length) while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.toString('latin1', 0, end);
}

/** Server-side names start with this; a client's names never reach a server. */
export const STATEMENT_PREFIX = 'pg_iam_proxy_';
/** A statement name the proxy never prepares: a client's Close goes to it (CloseComplete, nothing closed). */
export const NEVER_PREPARED = `${STATEMENT_PREFIX}none`;
/** Prepared and closed at once to answer a client's Parse of a statement the server already has. */
export const SCRATCH = `${STATEMENT_PREFIX}parse`;

/** One distinct statement: its name on servers and the Parse that prepares it there. */
export class Statement {
  /** Clients that hold it under a name of theirs; at 0 it is forgotten (servers may still have it). */
  refs = 0;
  readonly name: string;
  /** The Parse message that prepares it on a server, under `name`. */
  readonly parse: Buffer;
  /** `name` and its NUL, as a message carries them (a view of `parse`): what a Bind of it is given. */
  readonly nameBytes: Buffer;

  constructor(
    readonly id: number,
    /** Everything of the client's Parse after its statement name: SQL, parameter count and types. */
    readonly shape: string,
    body: Buffer,
  ) {
    this.name = `${STATEMENT_PREFIX}${id}`;
    this.parse = frontendMessage(Frontend.Parse, this.name, body);
    this.nameBytes = this.parse.subarray(HEADER_SIZE, HEADER_SIZE + this.name.length + 1); // the name is ASCII
  }
}

/** The distinct statements clients hold now, by shape. */
export class StatementRegistry {
  private readonly byShape = new Map<string, Statement>();
  private nextId = 1;

  /** The statement of a client's Parse (`head`: the whole message; `after`: where its name ended). */
  hold(head: Buffer, after: number): Statement {
    const shape = head.toString('latin1', after);
    let statement = this.byShape.get(shape);
    if (!statement) {
      statement = new Statement(this.nextId++, shape, head.subarray(after));
      this.byShape.set(shape, statement);
    }
    statement.refs++;
    return statement;
  }

  /** The statement of a client's Parse, if some client holds it now; not held by this call. */
  peek(head: Buffer, after: number): Statement | undefined {
    return this.byShape.get(head.toString('latin1', after));
  }

  /** A client holds it again (the Close that let go of it was skipped). */
  rehold(statement: Statement): void {
    if (statement.refs++ === 0 && !this.byShape.has(statement.shape)) this.byShape.set(statement.shape, statement);
  }

  /** A client let go of it (Close, or the client left). */
  let(statement: Statement): void {
    if (--statement.refs === 0 && this.byShape.get(statement.shape) === statement) this.byShape.delete(statement.shape);
  }
}

/** A Close of the statement `name` (text, or the bytes a client sent with their NUL). */
export const closeStatement = (name: string | Buffer): Buffer => frontendMessage(Frontend.Close, Buffer.of(0x53), name);

/** Parse(SCRATCH, "") + Close(SCRATCH): the first answers the client's Parse in its place, the second undoes it. */
export const SCRATCH_PARSE = frontendMessage(Frontend.Parse, SCRATCH, '', Buffer.alloc(2));
export const SCRATCH_CLOSE = closeStatement(SCRATCH);
/** Parse(SCRATCH) of the statement's own SQL and types: refused where the client's Parse would be (25P02). */
export const scratchParse = (statement: Statement): Buffer =>
  frontendMessage(Frontend.Parse, SCRATCH, statement.parse.subarray(HEADER_SIZE + Buffer.byteLength(statement.name) + 1));

/**
 * A client's DEALLOCATE of one of its statements in a simple Query runs on the server as DEALLOCATE of a
 * statement of this name made just before it: the client hears DEALLOCATE, and the proxy's statement
 * stays for other clients.
 */
export const DEALLOCATED = `${STATEMENT_PREFIX}deallocate`;
