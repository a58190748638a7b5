// The pieces of pooling that read what clients send: the SQL commands that drop statements, the startup
// parameters tracked per client, the settings query, and what a client is told of its settings.
import t from 'tap';
import { splitStatements, statementCommand } from '../src/pool/sql.js';
import { identifierKey } from '../src/pool/statements.js';
import { poolKeyOf, SETTINGS_NAME, settingsGroup, settingsQuery, splitStartup } from '../src/pool/params.js';
import { ClientSettings, readStatus } from '../src/pool/client-settings.js';
import { Ledger } from '../src/pool/ledger.js';
import { BackendCode as B, FrontendCode as F } from '../src/protocol/constants.js';
import { readStartupPacket, type StartupMessage } from '../src/protocol/startup.js';
import { Bytes, startupBytes } from './support/bytes.js';

const split = (sql: string) => splitStatements(sql)?.map((s) => s.text);

t.test('statements are cut at semicolons outside quotes, dollar quotes and comments', async (t) => {
  t.same(split("SELECT ';'; DEALLOCATE s1"), ["SELECT ';'", ' DEALLOCATE s1']);
  t.same(split("SELECT E'it\\'s;'; SELECT 'a''b;'"), ["SELECT E'it\\'s;'", " SELECT 'a''b;'"]);
  t.same(split('SELECT "a;b" FROM t; -- a comment; still\nSELECT 2'), ['SELECT "a;b" FROM t', ' -- a comment; still\nSELECT 2']);
  t.same(split('/* outer /* inner; */ still; */ SELECT 1;;'), ['/* outer /* inner; */ still; */ SELECT 1']);
  t.same(split('SELECT $f$ a; b $f$, $$;$$, x$y; SELECT $1'), ['SELECT $f$ a; b $f$, $$;$$, x$y', ' SELECT $1']);
  t.same(split('SELECT 1; -- only a comment'), ['SELECT 1']);
  for (const open of ["SELECT 'a", 'SELECT "a', 'SELECT $q$ a', '/* a', "SELECT E'\\"]) t.equal(split(open), undefined, open);
  t.same(
    splitStatements('a; b')?.map((s) => s.start),
    [0, 2],
    'each with where it starts',
  );
});

t.test('the commands that drop prepared statements', async (t) => {
  t.same(statementCommand('DEALLOCATE s1'), { kind: 'deallocate', name: 's1' });
  t.same(statementCommand('  deallocate prepare S1 ;'), { kind: 'deallocate', name: 's1' }, 'unquoted names fold to lower case');
  t.same(statementCommand('DEALLOCATE "My ""S"'), { kind: 'deallocate', name: 'My "S' });
  t.same(statementCommand('DEALLOCATE ALL'), { kind: 'deallocate-all' });
  t.same(statementCommand('Discard All;'), { kind: 'discard-all' });
  // Comments around it, as an ORM's query tags put them (a block comment may nest).
  t.same(statementCommand('/* app:web */ DEALLOCATE s1'), { kind: 'deallocate', name: 's1' });
  t.same(statementCommand('-- tag\nDEALLOCATE s1; -- done'), { kind: 'deallocate', name: 's1' });
  t.same(statementCommand('/* a /* nested */ one */DISCARD/**/ALL'), { kind: 'discard-all' });
  t.same(statementCommand('DEALLOCATE "a--b"'), { kind: 'deallocate', name: 'a--b' }, 'no comment inside quotes');
  t.same(
    statementCommand(`DEALLOCATE ${'x'.repeat(70)}`),
    { kind: 'deallocate', name: 'x'.repeat(63) },
    'a name is its first 63 bytes, as PostgreSQL finds it',
  );
  // Keys are bytes, one character each (latin1): PostgreSQL cuts an identifier back to whole characters.
  const bytes = (text: string) => Buffer.from(text, 'utf8').toString('latin1');
  t.equal(identifierKey('é'.repeat(40)), bytes('é'.repeat(31)), '62 bytes: the 32nd é would pass the 63rd');
  t.equal(identifierKey(`${'x'.repeat(62)}éa`), 'x'.repeat(62), 'the é that crosses byte 63 goes whole');
  t.equal(identifierKey(`${'x'.repeat(61)}éa`), bytes(`${'x'.repeat(61)}é`), 'one that ends at byte 63 stays');
  t.equal(identifierKey('short'), 'short');
  t.same(statementCommand('DEALLOCATE "é1"'), { kind: 'deallocate', name: bytes('é1') });
  for (const other of [
    'SELECT 1',
    'DISCARD PLANS',
    'DEALLOCATE',
    'DELETE FROM t',
    '-- DEALLOCATE s1',
    '/* DEALLOCATE s1',
    "SELECT '/*' DEALLOCATE",
  ])
    t.equal(statementCommand(other), undefined, other);
});

const startup = (params: Record<string, string>): StartupMessage => {
  const read = readStartupPacket(startupBytes(params));
  if (!('packet' in read) || read.packet.kind !== 'startup') throw new Error('not a startup');
  return read.packet;
};

t.test('startup parameters: tracked ones are SET per client, others key the pool', async (t) => {
  const split = (params: Record<string, string>) => {
    const s = splitStartup(startup({ user: 'u', database: 'd', ...params }).params);
    return {
      keyed: s.keyed.map((p) => `${p.name}=${p.value}`),
      tracked: Object.fromEntries([...s.tracked].map(([n, v]) => [n, String(v)])),
    };
  };
  t.same(split({ application_name: 'a', TimeZone: 'UTC' }), { keyed: [], tracked: { application_name: 'a', timezone: 'UTC' } });
  t.same(split({ options: '-c search_path=x --statement-timeout=5 -cwork_mem=4MB' }), {
    keyed: [],
    tracked: { search_path: 'x', statement_timeout: '5', work_mem: '4MB' },
  });
  for (const options of ['-c geqo_threshold=9', '-c search_path=a\\ b', '-c', '-c =x', '-d 5', '--search_path'])
    t.same(split({ options }).keyed, [`options=${options}`], `kept whole: ${options}`);
  t.same(split({ geqo: 'on', x_custom: 'y' }).keyed, ['x_custom=y'], 'an untracked parameter keys the pool');
  const key = poolKeyOf(startup({ user: 'app', database: 'db', application_name: 'a', x_custom: 'y' }), 'app_iam');
  t.match(key, { user: 'app_iam', database: 'db' });
  t.notOk(key.startup.includes('application_name'), 'a server starts without the tracked ones');
  t.ok(key.startup.includes('app_iam') && key.startup.includes('x_custom'));
});

t.test('the settings query: SET what differs (dollar-quoted, client_encoding first), RESET what the client did not ask for', async (t) => {
  const m = (o: Record<string, string>) => new Map(Object.entries(o).map(([k, v]) => [k, Buffer.from(v)]));
  const sql = (q: Buffer | undefined) => q?.toString('utf8', 5, q.length - 1);
  t.equal(
    sql(settingsQuery(m({ timezone: 'UTC', client_encoding: 'UTF8', search_path: 'a$p$b' }), m({ timezone: 'UTC', work_mem: '4MB' }))),
    'SET client_encoding TO $p$UTF8$p$;SET search_path TO $p1$a$p$b$p1$;RESET work_mem;',
  );
  t.equal(settingsQuery(m({ a: '1' }), m({ a: '1' })), undefined);
  t.equal(sql(settingsQuery(m({ a: '1' }), m({ a: '1' }), true)), 'RESET ALL;SET a TO $p$1$p$;');
});

const status = (name: string, value: string) => new Bytes().cstring(name).cstring(value).join('S');

t.test('what a client is told of its settings: its own SETs, and a reset back to its startup values', async (t) => {
  const greeted = new Map([
    ['timezone', { name: 'TimeZone', value: 'Asia/Tokyo' }],
    ['datestyle', { name: 'DateStyle', value: 'ISO, MDY' }],
  ]);
  const settings = new ClientSettings(new Map([['timezone', Buffer.from('asia/tokyo')]]), () => greeted);
  t.equal(settings.onStatus(status('TimeZone', 'UTC')), false, 'its own SET passes');
  t.equal(String(settings.current.get('timezone')), 'UTC', 'and is its value from now on');
  t.equal(settings.onStatus(status('server_version', '15')), false, 'untracked: passed');
  t.equal(readStatus(status('TimeZone', 'UTC'), 8), undefined, 'not whole: not read');
  // RESET (some): the setting the server reports back goes to the startup value, told as PostgreSQL would.
  settings.onTag('RESET');
  t.same(settings.onStatus(status('TimeZone', 'UTC')), status('TimeZone', 'Asia/Tokyo'), 'told its startup value');
  t.equal(settings.onStatus(status('DateStyle', 'ISO, MDY')), true, 'told nothing: unchanged for the client');
  const again = settings.afterGroup(new Map([['timezone', Buffer.from('UTC')]]));
  t.equal(again?.query.toString('utf8', 5, again.query.length - 1), 'SET timezone TO $p$asia/tokyo$p$;');
  t.equal(settings.afterGroup(new Map()), undefined, 'no reset since: nothing to set');
  settings.onTag('DISCARD ALL');
  t.same(settings.afterGroup(new Map())?.tracked, new Map([['timezone', Buffer.from('asia/tokyo')]]));
});

t.test('a COPY that completes without the CopyDone that ends it: the ledger is in doubt', async (t) => {
  const l = new Ledger();
  l.sent(F.Query);
  l.answer(B.CopyInResponse, -1);
  l.answer(B.CommandComplete, -1);
  t.match(l.doubt, /without the CopyDone/);
});

t.test("the settings as a group of the proxy's own: a DO block under its own name, or nothing", async (t) => {
  const want = new Map([['application_name', Buffer.from('app')]]);
  const group = settingsGroup(want, new Map());
  t.ok(group);
  t.same(group!.codes.map((c) => String.fromCharCode(c)).join(''), 'PBECCS');
  const text = group!.bytes.toString('latin1');
  t.match(text, /DO \$pg_iam_proxy_do\$BEGIN SET application_name TO \$p\$app\$p\$; END\$pg_iam_proxy_do\$/);
  t.match(text, new RegExp(SETTINGS_NAME));
  t.equal(settingsGroup(want, want), undefined, 'nothing differs');
  t.equal(
    settingsGroup(new Map([['application_name', Buffer.from('$pg_iam_proxy_do$')]]), new Map()),
    undefined,
    "a value holding the block's quote: a Query",
  );
});
