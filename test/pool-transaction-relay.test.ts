// The transaction relay in process, chunk by chunk as sockets would deliver them: which server gets what
// (statement names translated, Parses injected), what the client hears (injected answers kept from it,
// wherever a read cuts them), and how each server goes back to the pool.
import t from 'tap';
import fc from 'fast-check';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import pino from 'pino';
import { relayTransactions, type Holding } from '../src/pool/transaction-relay.js';
import { PooledServer } from '../src/pool/server.js';
import { NEVER_PREPARED, SCRATCH, StatementRegistry } from '../src/pool/statements.js';
import type { PoolKey, Pools } from '../src/pool/pool.js';
import { FrontendStream } from '../src/protocol/frontend.js';
import { Bytes } from './support/bytes.js';
import { socketStandIn } from './support/socket-stand-in.js';

/** A socket stand-in (written bytes kept, received ones pushed). */
const end = socketStandIn;

// Frontend messages.
const parse = (name: string, sql: string) => new Bytes().cstring(name).cstring(sql).raw([0, 0]).join('P');
const bind = (name: string, portal = '') => new Bytes().cstring(portal).cstring(name).raw([0, 0, 0, 0, 0, 0]).join('B');
const describe = (type: 'S' | 'P', name: string) => new Bytes().raw(Buffer.from(type)).cstring(name).join('D');
const close = (type: 'S' | 'P', name: string) => new Bytes().raw(Buffer.from(type)).cstring(name).join('C');
const execute = new Bytes().cstring('').int32(0).join('E');
const sync = new Bytes().join('S');
const flush = new Bytes().join('H');
const query = (sql: string) => new Bytes().cstring(sql).join('Q');
const terminate = Buffer.from([0x58, 0, 0, 0, 4]);
// Backend messages.
const parseComplete = new Bytes().join('1');
const bindComplete = new Bytes().join('2');
const closeComplete = new Bytes().join('3');
const commandComplete = new Bytes().cstring('SELECT 1').join('C');
const ready = (status: string) => new Bytes().raw(Buffer.from(status)).join('Z');
const error = (code: string) => new Bytes().raw(Buffer.from('S')).cstring('ERROR').raw(Buffer.from('C')).cstring(code).raw([0]).join('E');
const gone = (message: string) =>
  new Bytes()
    .raw(Buffer.from('S'))
    .cstring('ERROR')
    .raw(Buffer.from('C'))
    .cstring('26000')
    .raw(Buffer.from('M'))
    .cstring(message)
    .raw([0])
    .join('E');
const parameterStatus = (name: string, value: string) => new Bytes().cstring(name).cstring(value).join('S');

const KEY: PoolKey = { id: 'app\0db', user: 'app', database: 'db', startup: Buffer.alloc(0), params: new Map() };

interface Released {
  server: PooledServer;
  state: string;
  reset: boolean;
}

/** A pool of fake servers handed out in order, and what came back. */
function fakePools(servers: PooledServer[], maxPreparedStatements = 200) {
  const released: Released[] = [];
  let failure: Error | undefined;
  let taken = 0;
  const pools = {
    statements: new StatementRegistry(),
    settings: { maxPreparedStatements },
    // Every other transaction finds its server at once, the others wait for one (both paths).
    tryAcquire: () => (taken++ % 2 === 0 && !failure && servers.shift()) || undefined,
    acquire: async () => {
      if (failure) throw failure;
      const server = servers.shift();
      if (!server) throw new Error('no fake server left');
      return server;
    },
    release: (server: PooledServer, _key: PoolKey, state: string, reset = true) => {
      released.push({ server, state, reset });
      servers.push(server); // back in the pool, for the next transaction
    },
  };
  return { pools: pools as unknown as Pools, released, failWith: (err: Error) => (failure = err) };
}

function server() {
  const socket = end();
  return { ...socket, pooled: new PooledServer(socket.socket as unknown as TLSSocket, Buffer.alloc(8), Buffer.alloc(0)) };
}

function relay(
  servers: ReturnType<typeof server>[],
  options: {
    pipelined?: Buffer;
    maxPrepared?: number;
    shared?: Pick<ReturnType<typeof fakePools>, 'pools' | 'released' | 'failWith'>;
  } = {},
) {
  const client = end();
  const fake =
    options.shared ??
    fakePools(
      servers.map((s) => s.pooled),
      options.maxPrepared,
    );
  const holding: Holding = { server: undefined };
  const done = relayTransactions({
    client: client.socket as unknown as Socket,
    pools: fake.pools,
    key: KEY,
    signal: new AbortController().signal,
    holding,
    toClient: Buffer.alloc(0),
    pipelined: options.pipelined ?? Buffer.alloc(0),
    clientEnded: false,
    log: pino({ level: 'silent' }),
  });
  return { pools: fake.pools, released: fake.released, failWith: fake.failWith, client, done, holding };
}

const cat = (...parts: Buffer[]) => Buffer.concat(parts);

/** A relay over pools of the test's own making. */
function relayOn(pools: Pools) {
  const client = end();
  const done = relayTransactions({
    client: client.socket as unknown as Socket,
    pools,
    key: KEY,
    signal: new AbortController().signal,
    holding: { server: undefined },
    toClient: Buffer.alloc(0),
    pipelined: Buffer.alloc(0),
    clientEnded: false,
    log: pino({ level: 'silent' }),
  });
  return { client, done };
}

t.test('a named statement follows its client to another server: prepared there first, its answer kept', async (t) => {
  const a = server();
  const b = server();
  const { client, released, holding } = relay([a, b]);
  await client.receive(cat(parse('s1', 'SELECT 1'), sync));
  t.equal(holding.server, a.pooled, 'the first transaction holds server A');
  t.same(a.written(), cat(parse('pg_iam_proxy_1', 'SELECT 1'), sync), "A prepares it under the proxy's name");
  await a.receive(cat(parseComplete, ready('I')));
  t.same(client.written(), cat(parseComplete, ready('I')));
  t.match(released, [{ server: a.pooled, state: 'idle', reset: false }], 'A is back in the pool, as it is');
  t.equal(holding.server, undefined, 'between transactions the client holds nothing');
  // A is handed to someone else meanwhile: the next transaction lands on B.
  client.clear();
  await client.receive(cat(bind('s1'), execute, sync));
  t.equal(holding.server, b.pooled);
  t.same(b.written(), cat(parse('pg_iam_proxy_1', 'SELECT 1'), bind('pg_iam_proxy_1'), execute, sync), 'B gets the Parse first');
  await b.receive(cat(parseComplete, bindComplete, commandComplete, ready('I')));
  t.same(client.written(), cat(bindComplete, commandComplete, ready('I')), 'the injected ParseComplete is not heard');
  t.equal(released.length, 2);
  // Back on A, which has it: the Bind alone.
  client.clear();
  a.clear();
  await client.receive(cat(bind('s1'), execute, sync));
  t.same(a.written(), cat(bind('pg_iam_proxy_1'), execute, sync));
  await a.receive(cat(bindComplete, commandComplete, ready('I')));
  t.same(client.written(), cat(bindComplete, commandComplete, ready('I')));
});

t.test('an injected ParseComplete is kept from the client wherever the reads cut the answer', async (t) => {
  const answer = cat(parseComplete, bindComplete, commandComplete, ready('I'));
  for (let cut1 = 1; cut1 < answer.length; cut1++) {
    for (const cut2 of [cut1 + 1, cut1 + 3, answer.length]) {
      if (cut2 > answer.length) continue;
      const a = server();
      const { client, released } = relay([a]);
      // The client's statement is known (prepared elsewhere), not on this server.
      await client.receive(cat(parse('s1', 'SELECT 1'), sync));
      await a.receive(cat(parseComplete, ready('I')));
      a.pooled.prepared.clear();
      client.clear();
      await client.receive(cat(bind('s1'), execute, sync));
      for (const piece of [answer.subarray(0, cut1), answer.subarray(cut1, cut2), answer.subarray(cut2)]) {
        if (piece.length > 0) await a.receive(piece);
      }
      t.same(client.written(), cat(bindComplete, commandComplete, ready('I')), `cut at ${cut1} and ${cut2}`);
      t.equal(released.length, 2, `released after the answer (cut at ${cut1}, ${cut2})`);
    }
  }
});

t.test('an error in a pipeline: the rest up to Sync is skipped, and what it prepared is undone', async (t) => {
  const a = server();
  const b = server();
  const { client, released } = relay([a, b]);
  await client.receive(cat(parse('good', 'SELECT 1'), bind('good'), execute, parse('bad', 'SELEC 2'), bind('bad'), execute, sync));
  await a.receive(cat(parseComplete, bindComplete, commandComplete, error('42601'), ready('I')));
  t.same(client.written(), cat(parseComplete, bindComplete, commandComplete, error('42601'), ready('I')));
  t.equal(a.pooled.prepared.size, 1, 'the server has the good statement only');
  t.equal(released.length, 1);
  // "bad" does not exist for the client now, as with PostgreSQL: its Bind goes as it is (the server says so).
  b.clear();
  await client.receive(cat(bind('bad'), execute, sync));
  t.same(b.written(), cat(bind('bad'), execute, sync));
});

t.test('an error before an injected Parse: both skipped, and the server is known not to have it', async (t) => {
  const a = server();
  const { client } = relay([a]);
  await client.receive(cat(parse('s1', 'SELECT 1'), sync));
  await a.receive(cat(parseComplete, ready('I')));
  a.pooled.prepared.clear(); // as if closed there meanwhile
  a.clear();
  client.clear();
  await client.receive(cat(query('SELECT 1/0'), bind('s1'), execute, sync));
  await a.receive(cat(error('22012'), ready('I')));
  // Only the Query's own group errored; the Bind's group follows with its own Sync.
  t.equal(a.pooled.prepared.size, 1, 'the Parse came after the Query group: prepared');
  await a.receive(cat(parseComplete, bindComplete, commandComplete, ready('I')));
  t.same(client.written(), cat(error('22012'), ready('I'), bindComplete, commandComplete, ready('I')));
  a.clear();
  client.clear();
  a.pooled.prepared.clear();
  await client.receive(cat(bind('nope'), bind('s1'), execute, sync));
  await a.receive(cat(error('26000'), ready('I')));
  t.equal(a.pooled.prepared.size, 0, 'the injected Parse was skipped with the rest');
  t.same(client.written(), cat(error('26000'), ready('I')), 'no ParseComplete is heard, none was sent');
});

t.test("a Parse of a statement the server already has: answered by a throwaway, the client's names kept apart", async (t) => {
  const a = server();
  const first = relay([a]);
  await first.client.receive(cat(parse('mine', 'SELECT 1'), sync));
  await a.receive(cat(parseComplete, ready('I')));
  a.clear();
  // Another client prepares the same SQL under another name on the same server.
  const second = relay([], { shared: first });
  await second.client.receive(cat(parse('theirs', 'SELECT 1'), bind('theirs'), execute, sync));
  t.same(
    a.written(),
    cat(parse(SCRATCH, ''), close('S', SCRATCH), bind('pg_iam_proxy_1'), execute, sync),
    'the shared statement is used; the throwaway answers the Parse',
  );
  await a.receive(cat(parseComplete, closeComplete, bindComplete, commandComplete, ready('I')));
  t.same(second.client.written(), cat(parseComplete, bindComplete, commandComplete, ready('I')));
});

t.test('Close: the client forgets the name, the server keeps the statement for others; the name can be reused', async (t) => {
  const a = server();
  const { client } = relay([a]);
  await client.receive(cat(parse('s1', 'SELECT 1'), sync));
  await a.receive(cat(parseComplete, ready('I')));
  a.clear();
  client.clear();
  await client.receive(cat(close('S', 's1'), parse('s1', 'SELECT 2'), bind('s1'), execute, close('P', ''), sync));
  t.same(
    a.written(),
    cat(close('S', NEVER_PREPARED), parse('pg_iam_proxy_2', 'SELECT 2'), bind('pg_iam_proxy_2'), execute, close('P', ''), sync),
  );
  await a.receive(cat(closeComplete, parseComplete, bindComplete, commandComplete, closeComplete, ready('I')));
  t.same(client.written(), cat(closeComplete, parseComplete, bindComplete, commandComplete, closeComplete, ready('I')));
  t.equal(a.pooled.prepared.size, 2, 'both statements stay on the server');
});

t.test('--max-prepared-statements: the least recently used statement is closed on the server first', async (t) => {
  const a = server();
  const { client } = relay([a], { maxPrepared: 1 });
  await client.receive(cat(parse('s1', 'SELECT 1'), parse('s2', 'SELECT 2'), bind('s1'), sync));
  t.same(
    a.written(),
    cat(
      parse('pg_iam_proxy_1', 'SELECT 1'),
      close('S', 'pg_iam_proxy_1'),
      parse('pg_iam_proxy_2', 'SELECT 2'),
      close('S', 'pg_iam_proxy_2'),
      parse('pg_iam_proxy_1', 'SELECT 1'),
      bind('pg_iam_proxy_1'),
      sync,
    ),
  );
  await a.receive(cat(parseComplete, closeComplete, parseComplete, closeComplete, parseComplete, bindComplete, ready('I')));
  t.same(client.written(), cat(parseComplete, parseComplete, bindComplete, ready('I')), 'the injected answers are kept');
  t.same(
    [...a.pooled.prepared].map((s) => s.name),
    ['pg_iam_proxy_1'],
  );
});

t.test('Describe of a statement, Flush, then the rest: the server is held until Sync is answered', async (t) => {
  const a = server();
  const { client, released } = relay([a]);
  await client.receive(cat(parse('s1', 'SELECT $1::int'), describe('S', 's1'), flush));
  t.same(a.written(), cat(parse('pg_iam_proxy_1', 'SELECT $1::int'), describe('S', 'pg_iam_proxy_1'), flush));
  await a.receive(cat(parseComplete, new Bytes().raw([0, 1, 0, 0, 0, 23]).join('t'), new Bytes().raw([0, 0]).join('T')));
  t.equal(released.length, 0, 'no Sync yet: the server stays');
  await client.receive(cat(bind('s1'), execute, sync));
  await a.receive(cat(bindComplete, commandComplete, ready('I')));
  t.equal(released.length, 1);
});

t.test('a transaction spans several round trips; the server goes back only at ReadyForQuery idle', async (t) => {
  const a = server();
  const { client, released } = relay([a]);
  await client.receive(query('BEGIN'));
  await a.receive(cat(commandComplete, ready('T')));
  await client.receive(query('SELECT 1'));
  await a.receive(cat(commandComplete, ready('T')));
  t.equal(released.length, 0);
  await client.receive(query('COMMIT'));
  await a.receive(cat(parameterStatus('TimeZone', 'UTC'), commandComplete, ready('I')));
  t.match(released, [{ state: 'idle', reset: true }], 'a setting changed: the server is reset before the next client');
});

t.test('a client that leaves: mid-transaction the server is closed, between transactions nothing is held', async (t) => {
  const a = server();
  const mid = relay([a]);
  await mid.client.receive(query('BEGIN'));
  await a.receive(cat(commandComplete, ready('T')));
  mid.client.socket.push(null);
  t.match(await mid.done, { reason: 'client closed the connection' });
  t.match(mid.released, [{ state: 'busy' }]);
  const b = server();
  const idle = relay([b]);
  await idle.client.receive(terminate);
  t.match(await idle.done, { reason: 'client closed the connection' });
  t.same(b.written(), Buffer.alloc(0), 'a goodbye while holding nothing takes no server');
  t.equal(idle.released.length, 0);
});

t.test('a client that leaves behind a query it sent: nobody reads the answer, the server is cancelled and closed', async (t) => {
  const a = server();
  const { client, done, released } = relay([a], { pipelined: query('SELECT pg_sleep(20)') });
  await a.turn();
  t.same(a.written(), query('SELECT pg_sleep(20)'));
  client.socket.push(null);
  t.match(await done, { reason: 'client closed the connection' });
  t.match(released, [{ state: 'busy' }], 'at once, not when the query ends');
});

t.test('a Parse of a name in use: the server says 42P05 in its own words, from a statement of that name', async (t) => {
  const a = server();
  const { client, released } = relay([a]);
  await client.receive(cat(parse('s1', 'SELECT 1'), sync));
  await a.receive(cat(parseComplete, ready('I')));
  a.clear();
  client.clear();
  await client.receive(cat(parse('s1', 'SELECT 2'), sync));
  t.same(a.written(), cat(close('S', 's1'), parse('s1', 'ROLLBACK TO SAVEPOINT pg_iam_proxy_none'), parse('s1', 'SELECT 2'), sync));
  await a.receive(cat(closeComplete, parseComplete, error('42P05'), ready('I')));
  t.same(client.written(), cat(error('42P05'), ready('I')), "only the error is the client's");
  t.match(released.at(-1), { state: 'idle', reset: true }, 'the server is reset: its statement "s1" goes');
});

t.test("a Parse of one of the proxy's names: FATAL 42P05; the server, untouched, goes back", async (t) => {
  const a = server();
  const { client, done, released } = relay([a]);
  await client.receive(cat(parse('s1', 'SELECT 1'), sync));
  await a.receive(cat(parseComplete, ready('I')));
  await client.receive(cat(parse('pg_iam_proxy_7', 'SELECT 2'), sync));
  const end = await done;
  t.match(end.reason, 'prepared statement "pg_iam_proxy_7" already exists');
  t.match(client.written().toString(), /FATAL.*42P05/s);
  t.match(released.at(-1), { state: 'idle' });
});

t.test("names that look like the proxy's own never reach a server", async (t) => {
  const a = server();
  const { client } = relay([a]);
  await client.receive(cat(bind('pg_iam_proxy_1'), describe('S', 'pg_iam_proxy_1'), sync));
  t.same(a.written(), cat(bind(NEVER_PREPARED), describe('S', NEVER_PREPARED), sync));
});

t.test('no server to be had: the client hears FATAL, then the close', async (t) => {
  const { client, done, failWith } = relay([]);
  failWith(new Error('login refused'));
  await client.receive(query('SELECT 1'));
  t.match(await done, { reason: 'pg-iam-proxy could not get a server: login refused' });
  t.match(client.written().toString(), /FATAL.*08006.*login refused/s);
});

t.test('answers that match nothing sent: the server stays with its client, then is closed, never lent', async (t) => {
  const a = server();
  const { client, done, released } = relay([a]);
  await client.receive(cat(query('SELECT 1')));
  await a.receive(cat(parseComplete, commandComplete, ready('I')));
  t.same(client.written(), cat(parseComplete, commandComplete, ready('I')), 'the client hears what the server said');
  t.equal(a.pooled.ledger.doubt, 'a ParseComplete answered no request of its kind');
  t.equal(released.length, 0, 'not released at its ReadyForQuery');
  await client.receive(terminate);
  await done;
  t.match(released, [{ state: 'busy' }]);
});

t.test('a FATAL with nothing asked (terminated): the client hears it, the server is gone', async (t) => {
  const a = server();
  const { client, done, released } = relay([a]);
  await client.receive(query('BEGIN'));
  await a.receive(cat(commandComplete, ready('T')));
  await a.receive(error('57P01'));
  t.match(await done, { reason: 'the server ended the session' });
  t.match(released, [{ state: 'gone' }]);
  t.match(client.written().toString(), /57P01/);
});

t.test('an error while the client is still sending its pipeline: the rest of that group is skipped too', async (t) => {
  const a = server();
  const { client, released } = relay([a]);
  await client.receive(cat(parse('', 'SELECT 1/0'), bind(''), execute));
  await a.receive(cat(parseComplete, bindComplete, error('22012')));
  // More of the same group, after the error: the server skips it up to the Sync.
  await client.receive(cat(parse('s1', 'SELECT 1'), bind('s1'), execute, sync));
  await a.receive(ready('I'));
  t.equal(released.length, 1, 'released: nothing is owed');
  t.equal(a.pooled.prepared.size, 0, 'the skipped Parse is not taken as done');
  a.clear();
  await client.receive(cat(parse('s1', 'SELECT 1'), sync));
  t.same(a.written(), cat(parse('pg_iam_proxy_2', 'SELECT 1'), sync), 's1 did not exist, as PostgreSQL says: it can be parsed again');
  await a.receive(cat(parseComplete, ready('I')));
  t.equal(released.length, 2);
});

t.test('COPY FROM STDIN: the server goes back when it ends, in simple and extended protocol', async (t) => {
  const a = server();
  const { client, released } = relay([a]);
  await client.receive(query('COPY t FROM STDIN'));
  await a.receive(new Bytes().raw([0, 0, 0]).join('G'));
  await client.receive(cat(new Bytes().raw(Buffer.from('1\n')).join('d'), new Bytes().join('c')));
  await a.receive(cat(new Bytes().cstring('COPY 1').join('C'), ready('I')));
  t.equal(released.length, 1, 'simple: released at the end of the COPY');
  // libpq's extended COPY: the Sync sent with the Execute is ignored during copy-in; the one after
  // CopyDone is answered.
  await client.receive(cat(parse('', 'COPY t FROM STDIN'), bind(''), execute, sync));
  await a.receive(cat(parseComplete, bindComplete, new Bytes().raw([0, 0, 0]).join('G')));
  await client.receive(cat(new Bytes().raw(Buffer.from('2\n')).join('d'), new Bytes().join('c'), sync));
  t.equal(released.length, 1, 'held during the COPY');
  await a.receive(cat(new Bytes().cstring('COPY 1').join('C'), ready('I')));
  t.equal(released.length, 2, 'extended: released at its one ReadyForQuery');
  // A COPY that fails: the error does not end the session, the server goes back after the Sync.
  await client.receive(cat(parse('', 'COPY t FROM STDIN'), bind(''), execute, sync));
  await a.receive(cat(parseComplete, bindComplete, new Bytes().raw([0, 0, 0]).join('G')));
  await client.receive(cat(new Bytes().cstring('no').join('f'), sync));
  await a.receive(cat(error('57014'), ready('I')));
  t.equal(released.length, 3);
  t.match(released.at(-1), { state: 'idle' });
});

t.test('SET, LISTEN, DISCARD, PREPARE, DECLARE, CREATE TABLE: the server is reset before another client gets it', async (t) => {
  for (const tag of ['SET', 'RESET', 'LISTEN', 'DISCARD ALL', 'DISCARD PLANS', 'PREPARE', 'DECLARE CURSOR', 'CREATE TABLE']) {
    const a = server();
    const { client, released } = relay([a]);
    await client.receive(query(`-- ${tag}`));
    await a.receive(cat(new Bytes().cstring(tag).join('C'), ready('I')));
    t.match(released, [{ state: 'idle', reset: true }], tag);
  }
  for (const tag of ['DELETE 3', 'DEALLOCATE', 'DEALLOCATE ALL', 'CREATE INDEX']) {
    const a = server();
    const { client, released } = relay([a]);
    await client.receive(query(`-- ${tag}`));
    await a.receive(cat(new Bytes().cstring(tag).join('C'), ready('I')));
    t.match(released, [{ state: 'idle', reset: false }], `${tag}: no reset`);
  }
});

t.test("another client's unnamed statement is closed before a client without one binds the unnamed statement", async (t) => {
  const a = server();
  const first = relay([a]);
  await first.client.receive(cat(parse('', 'SELECT 1'), bind(''), execute, sync));
  await a.receive(cat(parseComplete, bindComplete, commandComplete, ready('I')));
  a.clear();
  const second = relay([], { shared: first });
  await second.client.receive(cat(bind(''), execute, sync));
  t.same(a.written(), cat(close('S', ''), bind(''), execute, sync));
  await a.receive(cat(closeComplete, error('26000'), ready('I')));
  t.same(second.client.written(), cat(error('26000'), ready('I')), "it cannot run the other client's statement");
});

t.test('the client breaks the protocol: FATAL 08P01, and the server it held is not reused', async (t) => {
  const a = server();
  const { client, done, released } = relay([a]);
  await client.receive(query('BEGIN'));
  await a.receive(cat(commandComplete, ready('T')));
  await client.receive(Buffer.from([0x51, 0, 0, 0, 1])); // a length word under 4
  t.match(await done, { reason: 'invalid message from the client: invalid message length 1' });
  t.match(client.written().toString(), /FATAL.*08P01/s);
  t.match(released, [{ state: 'busy' }]);
});

t.test('the server goes while held (closed, failed): the client is ended, the server not pooled', async (t) => {
  for (const how of ['end', 'error'] as const) {
    const a = server();
    const { client, done, released } = relay([a]);
    await client.receive(query('SELECT pg_sleep(1)'));
    if (how === 'end') a.socket.push(null);
    else a.socket.destroy(new Error('connection reset'));
    t.match(await done, { reason: how === 'end' ? 'server closed the connection' : 'error on the server connection: connection reset' });
    t.match(released, [{ state: 'gone' }]);
  }
});

t.test('a client gone while it waited for a server: the server, untouched, goes straight back', async (t) => {
  const a = server();
  let give: (s: PooledServer) => void = () => undefined;
  const released: Released[] = [];
  const pools = {
    statements: new StatementRegistry(),
    settings: { maxPreparedStatements: 10 },
    tryAcquire: () => undefined,
    acquire: () => new Promise<PooledServer>((resolve) => (give = resolve)),
    release: (server: PooledServer, _key: PoolKey, state: string, reset = true) => void released.push({ server, state, reset }),
  } as unknown as Pools;
  const { client, done } = relayOn(pools);
  await client.receive(query('SELECT 1'));
  client.socket.destroy();
  await done;
  give(a.pooled);
  await a.turn();
  t.match(released, [{ server: a.pooled, state: 'idle', reset: false }]);
  t.same(a.written(), Buffer.alloc(0), 'nothing was sent to it');
});

t.test('the client stream: a message to rewrite in many reads, a Parse over 16 MiB, a Bind head too long to gather', async (t) => {
  const seen: Buffer[] = [];
  const stream = new FrontendStream({ rewrite: (_c, head, _r, out) => void (seen.push(head), out.push(head)), passed: () => undefined });
  const long = parse('s1', 'SELECT '.padEnd(3000, 'x'));
  const out: Buffer[] = [];
  for (let at = 0; at < long.length; at += 100) {
    const chunk = Buffer.from(long.subarray(at, at + 100));
    stream.translate(chunk, out);
    chunk.fill(0); // the stream must have kept its own copy
  }
  t.same(Buffer.concat(out), long);
  t.same(seen, [long]);
  const hugeParse = parse('s1', `SELECT '${'x'.repeat(17 * 1024 * 1024)}'`);
  const parses: Buffer[] = [];
  const whole = new FrontendStream({
    rewrite: (_c, head, rest) => void parses.push(Buffer.from(head), Buffer.of(rest)),
    passed: () => undefined,
  });
  for (let at = 0; at < hugeParse.length; at += 1 << 20) whole.translate(hugeParse.subarray(at, at + (1 << 20)), []);
  t.same(parses, [hugeParse, Buffer.of(0)], 'a Parse is gathered whole, as PostgreSQL reads it');
  const huge = Buffer.alloc(5);
  huge[0] = 0x42;
  huge.writeUInt32BE(17 * 1024 * 1024, 1);
  const big = new FrontendStream({ rewrite: () => undefined, passed: () => undefined });
  big.translate(huge, []);
  t.throws(() => big.translate(Buffer.alloc(17 * 1024 * 1024, 1), []), /a B message too long to rewrite/);
});

t.test('the client stream: any cut of any message sequence gives the server the same bytes', async (t) => {
  const message = fc.oneof(
    fc.constantFrom(sync, flush, execute, query('SELECT 1'), terminate.subarray(0, 0)),
    fc.tuple(fc.constantFrom('', 's1', 's2'), fc.string({ maxLength: 40 })).map(([n, sql]) => parse(n, sql.replace(/\0/g, ''))),
    fc.tuple(fc.constantFrom('', 's1', 's2'), fc.constantFrom('', 'p')).map(([n, p]) => bind(n, p)),
    fc.tuple(fc.constantFrom<'S' | 'P'>('S', 'P'), fc.constantFrom('', 's1')).map(([k, n]) => describe(k, n)),
    fc.tuple(fc.constantFrom<'S' | 'P'>('S', 'P'), fc.constantFrom('', 's2')).map(([k, n]) => close(k, n)),
  );
  fc.assert(
    fc.property(fc.array(message, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 6 }), (messages, cuts) => {
      const whole = Buffer.concat(messages);
      const translate = (chunks: Buffer[]) => {
        const seen: string[] = [];
        const stream = new FrontendStream({
          rewrite: (code, head, rest, out) => {
            seen.push(`${String.fromCharCode(code)}:${head.length}+${rest}`);
            out.push(head);
          },
          passed: (code) => void seen.push(String.fromCharCode(code)),
        });
        const out: Buffer[] = [];
        for (const chunk of chunks) stream.translate(Buffer.from(chunk), out);
        return { bytes: Buffer.concat(out), seen, boundary: stream.atBoundary };
      };
      const positions = [0, ...[...new Set(cuts.map((c) => c % (whole.length + 1)))].sort((x, y) => x - y), whole.length];
      const chunks = positions.slice(1).map((to, i) => whole.subarray(positions[i], to));
      const once = translate([whole]);
      const cut = translate(chunks);
      return cut.bytes.equals(whole) && JSON.stringify(cut.seen) === JSON.stringify(once.seen) && cut.boundary;
    }),
    { numRuns: 500 },
  );
  t.pass('500 message sequences, cut anywhere: the same bytes and messages');
});

const copyIn = new Bytes().raw([0, 0, 0]).join('G');
const copyData = (s: string) => new Bytes().raw(Buffer.from(s)).join('d');
const copyDone = new Bytes().join('c');
const complete = (tag: string) => new Bytes().cstring(tag).join('C');
const row = (s: string) => new Bytes().raw([0, 1]).int32(s.length).raw(Buffer.from(s)).join('D');

t.test('Execute(COPY), CopyData, CopyDone and Sync in one write: the server is not lent before its last answer', async (t) => {
  const a = server();
  const first = relay([a]);
  await first.client.receive(cat(parse('', 'COPY t FROM STDIN'), bind(''), execute, copyData('1\n'), copyDone, sync));
  await a.receive(cat(parseComplete, bindComplete, copyIn, complete('COPY 1')));
  t.equal(first.released.length, 0, 'held while its Sync is unanswered');
  await a.receive(ready('I'));
  t.match(first.released, [{ state: 'idle' }], 'back after the ReadyForQuery that answers that Sync');
  t.same(first.client.written(), cat(parseComplete, bindComplete, copyIn, complete('COPY 1'), ready('I')));
});

t.test('pipelines with errors: a skipped Close, a skipped Parse and a re-Parse act as on a direct connection', async (t) => {
  const a = server();
  const { client, released } = relay([a]);
  await client.receive(cat(parse('k1', 'SELECT 1'), sync));
  await a.receive(cat(parseComplete, ready('I')));
  a.clear();
  client.clear();
  // An error makes the server skip a Close of k1 and a Parse of m2; the next group, already pipelined,
  // binds both: it is held until the server has told what became of them.
  await client.receive(cat(parse('', 'SELECT 1/0'), bind(''), execute, close('S', 'k1'), parse('m2', 'SELECT 2'), sync));
  await client.receive(cat(bind('k1'), execute, bind('m2'), execute, sync, parse('m2', 'SELECT 2'), sync));
  t.same(
    a.written(),
    cat(parse('', 'SELECT 1/0'), bind(''), execute, close('S', NEVER_PREPARED), parse('pg_iam_proxy_2', 'SELECT 2'), sync),
    'the second group waits: it names what the first may not have done',
  );
  a.clear();
  await a.receive(cat(parseComplete, bindComplete, error('22012'), ready('I')));
  t.same(
    a.written(),
    cat(bind('pg_iam_proxy_1'), execute, bind('m2'), execute, sync, parse('pg_iam_proxy_3', 'SELECT 2'), sync),
    "k1 still exists (its Close was skipped); m2 does not (its Parse was skipped), in the client's own words; parsing it again runs",
  );
  t.same(
    [...a.pooled.prepared].map((s) => s.name),
    ['pg_iam_proxy_1', 'pg_iam_proxy_3'],
  );
  await a.receive(cat(bindComplete, commandComplete, error('26000'), ready('I'), parseComplete, ready('I')));
  t.equal(released.length, 2);
  t.same(
    client.written(),
    cat(
      parseComplete,
      bindComplete,
      error('22012'),
      ready('I'),
      bindComplete,
      commandComplete,
      error('26000'),
      ready('I'),
      parseComplete,
      ready('I'),
    ),
  );
});

t.test("a client's DEALLOCATE and DISCARD ALL act on its own statements, in both protocols", async (t) => {
  const a = server();
  const { client } = relay([a]);
  await client.receive(cat(parse('_pg3_0', 'SELECT 1'), parse('_pg3_1', 'SELECT 2'), sync));
  await a.receive(cat(parseComplete, parseComplete, ready('I')));
  a.clear();
  client.clear();
  // Simple protocol: DEALLOCATE of a name of the client's.
  await client.receive(query('DEALLOCATE _pg3_0'));
  t.same(a.written(), query('PREPARE pg_iam_proxy_deallocate_q AS SELECT;DEALLOCATE pg_iam_proxy_deallocate_q'));
  await a.receive(cat(complete('PREPARE'), complete('DEALLOCATE'), ready('I')));
  t.same(client.written(), cat(complete('DEALLOCATE'), ready('I')), 'the client hears its DEALLOCATE only');
  a.clear();
  client.clear();
  // Extended protocol (psycopg in a pipeline): the unnamed Parse goes as written; when its portal runs,
  // a statement of the client's name is made just before, for the DEALLOCATE to find.
  await client.receive(cat(parse('', 'DEALLOCATE _pg3_1'), bind(''), execute, sync));
  t.same(
    a.written(),
    cat(
      parse('', 'DEALLOCATE _pg3_1'),
      bind(''),
      close('S', '_pg3_1'),
      parse('_pg3_1', 'ROLLBACK TO SAVEPOINT pg_iam_proxy_none'),
      execute,
      sync,
    ),
  );
  await a.receive(cat(parseComplete, bindComplete, closeComplete, parseComplete, complete('DEALLOCATE'), ready('I')));
  t.same(client.written(), cat(parseComplete, bindComplete, complete('DEALLOCATE'), ready('I')));
  a.clear();
  // Both names are free again: Parse them anew, no 42P05.
  await client.receive(cat(parse('_pg3_0', 'SELECT 1'), parse('_pg3_1', 'SELECT 3'), sync));
  t.same(a.written(), cat(parse('pg_iam_proxy_3', 'SELECT 1'), parse('pg_iam_proxy_4', 'SELECT 3'), sync));
  await a.receive(cat(parseComplete, parseComplete, ready('I')));
  a.clear();
  // DEALLOCATE ALL drops them all, and a failed one takes nothing away.
  await client.receive(query('DEALLOCATE ALL'));
  await a.receive(cat(error('25P02'), ready('E')));
  await client.receive(cat(bind('_pg3_0'), sync));
  t.match(a.written().toString(), /pg_iam_proxy_3/, 'the failed DEALLOCATE ALL dropped nothing');
  await a.receive(cat(bindComplete, ready('E')));
  a.clear();
  await client.receive(query('ROLLBACK'));
  await a.receive(cat(complete('ROLLBACK'), ready('I')));
  await client.receive(query('discard  ALL ;'));
  await a.receive(cat(complete('DISCARD ALL'), ready('I')));
  t.equal(a.pooled.prepared.size, 0, 'the server said it has none of them left');
  a.clear();
  await client.receive(cat(bind('_pg3_0'), sync));
  t.same(a.written(), cat(bind('_pg3_0'), sync), 'the client has none either: the server says so in its words');
});

t.test('the unnamed statement follows its client to another server; a Query drops it', async (t) => {
  const a = server();
  const b = server();
  const list = [a.pooled, b.pooled];
  const shared = fakePools(list);
  /** The next transaction of any client lands on `s`. */
  const next = (s: ReturnType<typeof server>) => list.sort((x) => (x === s.pooled ? -1 : 1));
  const one = relay([], { shared });
  const two = relay([], { shared });
  next(a);
  await one.client.receive(cat(parse('', 'SELECT $1::int'), sync));
  await a.receive(cat(parseComplete, ready('I')));
  next(b);
  await two.client.receive(cat(parse('', 'SELECT 2'), sync));
  await b.receive(cat(parseComplete, ready('I')));
  one.client.clear();
  // Client one lands on B, which holds client two's unnamed statement: its own goes first.
  next(b);
  b.clear();
  await one.client.receive(cat(bind(''), execute, sync));
  t.same(b.written(), cat(parse('', 'SELECT $1::int'), bind(''), execute, sync));
  await b.receive(cat(parseComplete, bindComplete, commandComplete, ready('I')));
  t.same(one.client.written(), cat(bindComplete, commandComplete, ready('I')));
  // Back on B it has its own: nothing goes first.
  next(b);
  b.clear();
  await one.client.receive(cat(bind(''), execute, sync));
  t.same(b.written(), cat(bind(''), execute, sync));
  await b.receive(cat(bindComplete, commandComplete, ready('I')));
  // After a Query the client has none: on A, which holds its old one, that one is closed first.
  next(b);
  await one.client.receive(query('SELECT 1'));
  await b.receive(cat(commandComplete, ready('I')));
  next(a);
  a.clear();
  await one.client.receive(cat(bind(''), sync));
  t.same(a.written(), cat(close('S', ''), bind(''), sync), 'the statement it had before its Query is not bound');
  await a.receive(cat(closeComplete, error('26000'), ready('I')));
});

t.test(
  'a Bind of a statement that was gone (26000): the server forgets its statements, then closes each before preparing it',
  async (t) => {
    const a = server();
    const { client, released } = relay([a]);
    await client.receive(cat(parse('s1', 'SELECT 1'), sync));
    await a.receive(cat(parseComplete, ready('I')));
    a.clear();
    // The unnamed statement's 26000 is not the proxy's business: nothing is forgotten.
    await client.receive(cat(bind(''), sync));
    await a.receive(cat(gone('unnamed prepared statement does not exist'), ready('I')));
    t.equal(a.pooled.statementsUnsure, false);
    t.equal(a.pooled.prepared.size, 1);
    await client.receive(cat(bind('s1'), execute, sync));
    await a.receive(cat(gone('prepared statement "pg_iam_proxy_1" does not exist'), ready('I')));
    t.equal(a.pooled.statementsUnsure, true);
    t.equal(a.pooled.prepared.size, 0);
    a.clear();
    await client.receive(cat(bind('s1'), execute, sync));
    t.same(a.written(), cat(close('S', 'pg_iam_proxy_1'), parse('pg_iam_proxy_1', 'SELECT 1'), bind('pg_iam_proxy_1'), execute, sync));
    await a.receive(cat(closeComplete, parseComplete, bindComplete, commandComplete, ready('I')));
    t.same(client.written().subarray(-(bindComplete.length + commandComplete.length + 6)), cat(bindComplete, commandComplete, ready('I')));
    t.equal(released.length, 4);
  },
);

t.test('a client that leaves while it waits for a server is dropped from the queue at once', async (t) => {
  let signal: AbortSignal | undefined;
  const released: Released[] = [];
  const pools = {
    statements: new StatementRegistry(),
    settings: { maxPreparedStatements: 10 },
    tryAcquire: () => undefined,
    acquire: (_key: PoolKey, s: AbortSignal) =>
      new Promise<PooledServer>((_resolve, reject) => {
        signal = s;
        s.addEventListener('abort', () => reject(s.reason));
      }),
    release: (server: PooledServer, _key: PoolKey, state: string, reset = true) => void released.push({ server, state, reset }),
  } as unknown as Pools;
  const { client, done } = relayOn(pools);
  await client.receive(query('SELECT 1'));
  t.equal(signal?.aborted, false, 'waiting');
  client.socket.push(null); // a clean FIN, as a client's close while queued sends
  t.match(await done, { reason: 'client closed the connection while waiting for a server' });
  t.equal(signal?.aborted, true, 'the wait was given up');
  t.equal(released.length, 0);
});

t.test('a server message cut anywhere, kept from the client or not: the client gets exactly its own bytes', async (t) => {
  const answers = cat(closeComplete, parseComplete, bindComplete, row('x'.repeat(40)), complete('SELECT 1'), ready('I'));
  const expected = cat(bindComplete, row('x'.repeat(40)), complete('SELECT 1'), ready('I'));
  for (let size = 1; size <= 9; size++) {
    const a = server();
    const { client, released } = relay([a]);
    await client.receive(cat(parse('s1', 'SELECT 1'), sync));
    await a.receive(cat(parseComplete, ready('I')));
    a.pooled.statementsUnsure = true;
    a.pooled.prepared.clear();
    client.clear();
    await client.receive(cat(bind('s1'), execute, sync));
    for (let at = 0; at < answers.length; at += size) await a.receive(answers.subarray(at, at + size));
    t.same(client.written(), expected, `in pieces of ${size}`);
    t.equal(released.length, 2);
  }
});

t.test('a DEALLOCATE among other statements of one Query: each drop holds once its statement completes', async (t) => {
  const a = server();
  const { client } = relay([a]);
  await client.receive(cat(parse('s1', 'SELECT 1'), parse('s2', 'SELECT 2'), sync));
  await a.receive(cat(parseComplete, parseComplete, ready('I')));
  a.clear();
  client.clear();
  await client.receive(query("BEGIN; DEALLOCATE s1; SELECT ';'; DEALLOCATE ALL; ROLLBACK"));
  t.same(
    a.written(),
    query("BEGIN;PREPARE pg_iam_proxy_deallocate_q AS SELECT;DEALLOCATE pg_iam_proxy_deallocate_q; SELECT ';'; DEALLOCATE ALL; ROLLBACK"),
  );
  // Fails at the SELECT: DEALLOCATE s1 ran (it stays dropped, as PostgreSQL's is not transactional), DEALLOCATE ALL did not.
  await a.receive(cat(complete('BEGIN'), complete('PREPARE'), complete('DEALLOCATE'), error('XX000'), ready('E')));
  t.same(client.written(), cat(complete('BEGIN'), complete('DEALLOCATE'), error('XX000'), ready('E')));
  a.clear();
  await client.receive(cat(bind('s1'), bind('s2'), sync));
  t.same(a.written(), cat(bind('s1'), bind('pg_iam_proxy_2'), sync), 's1 is gone, s2 is not');
});

t.test("an error naming one of the proxy's statements names it as the client does, wherever reads cut it", async (t) => {
  const message = (name: string) =>
    new Bytes()
      .raw(Buffer.from('S'))
      .cstring('ERROR')
      .raw(Buffer.from('C'))
      .cstring('08P01')
      .raw(Buffer.from('M'))
      .cstring(`bind message supplies 1 parameters, but prepared statement "${name}" requires 0`)
      .raw([0])
      .join('E');
  for (const size of [1, 3, 7, 50, 1000]) {
    const a = server();
    const { client } = relay([a]);
    await client.receive(cat(parse('s2', 'SELECT 1'), sync));
    await a.receive(cat(parseComplete, ready('I')));
    client.clear();
    await client.receive(cat(bind('s2'), sync));
    const answers = cat(message('pg_iam_proxy_1'), ready('I'));
    for (let at = 0; at < answers.length; at += size) await a.receive(answers.subarray(at, at + size));
    t.same(client.written(), cat(message('s2'), ready('I')), `in pieces of ${size}`);
  }
});

t.test("a syntax error in a Query whose DEALLOCATE was rewritten: its position is in the client's text", async (t) => {
  const a = server();
  const { client } = relay([a]);
  await client.receive(cat(parse('s1', 'SELECT 1'), sync));
  await a.receive(cat(parseComplete, ready('I')));
  a.clear();
  client.clear();
  const sql = 'DEALLOCATE s1; SELEC 1';
  await client.receive(query(sql));
  const sent = a.written().toString('utf8', 5, a.written().length - 1);
  const syntax = (position: number) =>
    new Bytes()
      .raw(Buffer.from('S'))
      .cstring('ERROR')
      .raw(Buffer.from('C'))
      .cstring('42601')
      .raw(Buffer.from('M'))
      .cstring('syntax error at or near "SELEC"')
      .raw(Buffer.from('P'))
      .cstring(String(position))
      .raw([0])
      .join('E');
  await a.receive(cat(syntax(sent.lastIndexOf('SELEC') + 1), ready('I')));
  t.same(client.written(), cat(syntax(sql.indexOf('SELEC') + 1), ready('I')));
  a.clear();
  await client.receive(cat(bind('s1'), sync));
  t.same(a.written(), cat(bind('pg_iam_proxy_1'), sync), 'nothing ran: s1 is still there');
});
