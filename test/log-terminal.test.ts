// The terminal formatter (log-terminal.ts) line by line, fed by a real pino logger or by JSON lines with
// chosen times, and the JSON logs' stack traces, each logged once.
import t from 'tap';
import { createLogger } from '../src/log.js';
import { terminalStream } from '../src/log-terminal.js';
import { memoryLog } from './support/memory-log.js';

/** A terminal stream whose output stays in memory, one entry per line written. */
function screen(level = 'info', color = false) {
  let out = '';
  const stream = terminalStream({ level, color, out: { write: (text: string) => (out += text) } });
  return {
    stream,
    log: createLogger({ level, format: 'json' }, stream),
    lines: () => out.split('\n').slice(0, -1),
    /** One JSON line as pino writes it, at `time` ms. */
    write: (entry: Record<string, unknown>) => stream.write(`${JSON.stringify({ level: 40, pid: 1, name: 'pg-iam-proxy', ...entry })}\n`),
  };
}
const TIME = '\\d\\d:\\d\\d:\\d\\d';
/** A JSON line's time, as the terminal shows it. */
const clock = (ms: number) => new Date(ms).toTimeString().slice(0, 8);

t.test('a session line: time, level, the sentence and the fields that matter, nothing else', async (t) => {
  const { log, lines } = screen();
  const session = log.child({ instance: 'db.example:5432', conn: 7, client: '127.0.0.1:51234' });
  const startup = { user: 'app', database: 'orders', application_name: 'psql' };
  session.info(
    { startup, endpoint: 'db.example:5432', readyMs: 42, accessKeyId: 'AKIAIOSFODNN7EXAMPLE', password: 'never' },
    'session opened',
  );
  session.info({ startup, endpoint: 'db.example:5432', readyMs: 9, pooled: 3 }, 'session opened from the pool');
  session.info(
    { startup, phase: 'ready', durationMs: 2345, bytes: { fromClient: 1, toClient: 2 }, reason: 'client closed the connection' },
    'session closed',
  );
  session.warn({ startup, phase: 'login', durationMs: 12, reason: 'no such database', failure: 'upstream_error' }, 'session failed');
  session.info(
    { startup, readyMs: 30, accessKeyId: 'AKIAIOSFODNN7EXAMPLE' },
    'server ended the session at startup: database "x" does not exist',
  );
  t.match(lines(), [
    new RegExp(`^${TIME} INFO  session opened user=app db=orders from=127\\.0\\.0\\.1:51234 ready=42ms signed-by=AKIA…PLE$`),
    /INFO {2}session opened from the pool user=app db=orders from=127\.0\.0\.1:51234 ready=9ms$/,
    /INFO {2}session closed user=app db=orders from=127\.0\.0\.1:51234 duration=2\.3s reason="client closed the connection"$/,
    /WARN {2}session failed user=app db=orders from=127\.0\.0\.1:51234 duration=12ms reason="no such database" failure=upstream_error$/,
    /INFO {2}server ended the session at startup: database "x" does not exist user=app db=orders from=\S+ ready=30ms signed-by=AKIA…PLE$/,
  ]);
  t.equal(lines().length, 5, 'one line each');
  t.notMatch(lines().join('\n'), /[{}]|conn=|pid|never|psql|instance|endpoint|pooled|bytes/, 'no JSON, no fields that do not matter');
});

t.test('the general fields, and the listener line', async (t) => {
  const { log, lines } = screen();
  log.info({ instance: 'db.example:5432', listen: '127.0.0.1:5432', connectTo: 'db.example:5432', region: 'us-east-1' }, 'listening');
  log.info({ instance: 'db.example:5432', unixSocket: '/run/pg/.s.PGSQL.5432', connectTo: '127.0.0.1:15432' }, 'listening');
  log.info({ http: '127.0.0.1:9090', identities: [] }, 'health and metrics listening');
  log.info(
    {
      identity: 'x',
      source: 'environment variables',
      accessKeyId: 'ASIAEXAMPLEKEY123',
      expiration: '2030-01-01T00:00:00.000Z',
      arn: 'arn:aws:iam::1:user/ci',
    },
    'AWS identity ready',
  );
  log.info({ server: 1, user: 'app', database: 'orders' }, 'pool: server opened');
  log.warn({ profile: 'dev', program: '/opt/helper', exitCode: 1 }, 'credential_process of profile dev exited 1');
  log.warn({ tried: 'environment variables (none)', advice: 'run `aws sso login`' }, 'no AWS credentials yet');
  log.info({ warning: { name: 'Warning', message: 'old Node' } }, 'Node.js warning');
  log.info({ signal: 'SIGTERM', graceSeconds: 30 }, 'shutting down');
  log.info({ value: 'x', shape: { deep: true } });
  t.match(lines(), [
    /INFO {2}listening listen=127\.0\.0\.1:5432 endpoint=db\.example:5432$/,
    /INFO {2}listening unix-socket=\/run\/pg\/\.s\.PGSQL\.5432 endpoint=db\.example:5432 connect-to=127\.0\.0\.1:15432$/,
    /INFO {2}health and metrics listening http=127\.0\.0\.1:9090$/,
    /INFO {2}AWS identity ready arn=arn:aws:iam::1:user\/ci source="environment variables" key=ASIA…123 expires=2030-01-01T00:00:00\.000Z$/,
    /INFO {2}pool: server opened user=app db=orders$/,
    /WARN {2}credential_process of profile dev exited 1 program=\/opt\/helper$/,
    /WARN {2}no AWS credentials yet tried="environment variables \(none\)" advice="run `aws sso login`"$/,
    /INFO {2}Node\.js warning warning="old Node"$/,
    /INFO {2}shutting down signal=SIGTERM$/,
    new RegExp(`^${TIME} INFO  $`),
  ]);
});

t.test('errors: the message at info, the stack only at debug', async (t) => {
  const err = new Error('connect ECONNREFUSED 127.0.0.1:5432');
  const info = screen('info');
  info.log.warn({ err }, 'endpoint not reachable');
  info.log.fatal({ err }, `cannot start: ${err.message}`);
  info.write({ level: 50, time: 0, err: { message: 'only this' } });
  info.log.warn({ err: new Error('empty'), reason: '' }, 'quoted');
  t.match(info.lines(), [
    /WARN {2}endpoint not reachable: connect ECONNREFUSED 127\.0\.0\.1:5432$/,
    /FATAL cannot start: connect ECONNREFUSED 127\.0\.0\.1:5432$/,
    /ERROR only this$/,
    /WARN {2}quoted: empty reason=""$/,
  ]);
  t.notMatch(info.lines().join('\n'), / {4}at /, 'no stack frames at info');

  const debug = screen('debug');
  debug.log.debug({ err: new Error('seen at debug') }, 'token rejected');
  t.match(debug.lines()[0], /DEBUG token rejected: seen at debug$/);
  t.match(debug.lines()[1], /^ {2}Error: seen at debug$/);
  t.match(debug.lines()[2], /^ {6}at /, 'the frames, under the line');
  const trace = screen('trace');
  trace.log.trace({ err: new Error('at trace') }, 'x');
  t.match(trace.lines().join('\n'), / {6}at /);
});

t.test('what clients send cannot drive the terminal: control characters are shown as escapes', async (t) => {
  const { log, lines } = screen('debug');
  const session = log.child({ client: '127.0.0.1:1' });
  session.info({ startup: { user: '\x1b[2Jroot', database: 'a\nb' } }, 'session closed');
  session.warn({ err: new Error('user "\x1b]0;owned\x07" is not allowed') }, 'refused:\r\n00:00:00 INFO  all is well');
  // After the time.
  t.same(
    lines()
      .slice(0, 2)
      .map((line) => line.slice(9)),
    [
      'INFO  session closed user="\\u001b[2Jroot" db="a\\nb" from=127.0.0.1:1',
      'WARN  refused:\\u000d\\u000a00:00:00 INFO  all is well: user "\\u001b]0;owned\\u0007" is not allowed from=127.0.0.1:1',
    ],
  );
  t.match(lines()[2], /^ {2}Error: user "\\u001b\]0;owned\\u0007" is not allowed$/, 'the stack too');
  t.notMatch(lines().join('\n'), /[\x00-\x09\x0b-\x1f\x7f]/);
});

t.test('colour: the level word alone, when asked for', async (t) => {
  const { write, stream, lines } = screen('info', true);
  write({ level: 40, time: 0, msg: 'careful' });
  write({ level: 35, time: 0, msg: 'a level of its own' });
  stream.write('not JSON at all\n');
  t.match(lines(), [/^\S+ \x1b\[33mWARN \x1b\[0m careful$/, /^\S+ 35 a level of its own$/, /^not JSON at all$/]);
});

t.test('a warning that repeats: printed once, then summarised at most once a minute', async (t) => {
  const { write, lines } = screen();
  const at = Date.parse('2030-01-01T10:00:00Z');
  const failed = (time: number, retryInSeconds?: number) =>
    write({ time, msg: 'AWS credentials fetch failed', err: { message: 'no AWS credentials', stack: 'x' }, retryInSeconds });
  failed(at, 1);
  failed(at + 1_000, 2);
  failed(at + 3_000, 4);
  write({ time: at + 4_000, msg: 'AWS credentials fetch failed', err: { message: 'another cause' } });
  write({ level: 30, time: at + 5_000, msg: 'an info line repeats as it is' });
  write({ level: 30, time: at + 6_000, msg: 'an info line repeats as it is' });
  failed(at + 63_000, 60);
  failed(at + 123_000, 60);
  failed(at + 124_000);
  write({ level: 50, time: at + 190_000, msg: 'session failed', reason: 'no credentials' });
  write({ level: 50, time: at + 191_000, msg: 'session failed', reason: 'no credentials' });
  write({ level: 50, time: at + 192_000, msg: 'session failed', reason: 'database unreachable' });
  failed(at + 190_000);
  failed(at + 10 * 60_000, 60);
  t.same(lines(), [
    `${clock(at)} WARN  AWS credentials fetch failed: no AWS credentials next-try=1s`,
    `${clock(at + 4_000)} WARN  AWS credentials fetch failed: another cause`,
    `${clock(at + 5_000)} INFO  an info line repeats as it is`,
    `${clock(at + 6_000)} INFO  an info line repeats as it is`,
    `${clock(at + 63_000)} WARN  still AWS credentials fetch failed (4 times since ${clock(at)}); next try in 60 s`,
    `${clock(at + 123_000)} WARN  still AWS credentials fetch failed (5 times since ${clock(at)}); next try in 60 s`,
    `${clock(at + 190_000)} ERROR session failed reason="no credentials"`,
    `${clock(at + 192_000)} ERROR session failed reason="database unreachable"`,
    `${clock(at + 190_000)} WARN  still AWS credentials fetch failed (7 times since ${clock(at)})`,
    `${clock(at + 10 * 60_000)} WARN  AWS credentials fetch failed: no AWS credentials next-try=60s`,
  ]);
});

t.test('repeats are remembered for 10 minutes, and at most 100 of them', async (t) => {
  const { write, lines } = screen();
  const at = Date.parse('2030-01-01T10:00:00Z');
  write({ time: at, msg: 'first' });
  // Ten minutes on, the first is forgotten as the next one comes.
  write({ time: at + 10 * 60_000, msg: 'second' });
  for (let i = 0; i < 100; i++) write({ time: at + 10 * 60_000 + i, msg: `warning ${i}` });
  write({ time: at + 11 * 60_000, msg: 'second' });
  write({ time: at + 11 * 60_000, msg: 'warning 99' });
  t.equal(lines().length, 1 + 1 + 100 + 1, 'the second again in full: 101 others came since');
  t.match(lines().at(-1), /WARN {2}second$/);
});

t.test('JSON: a stack is logged once per error; its repeats say so instead', async (t) => {
  const { log, lines } = memoryLog('info');
  const fail = () => new Error('no AWS credentials');
  const err = fail();
  log.warn({ err }, 'AWS credentials fetch failed');
  log.warn({ err }, 'no AWS credentials yet');
  log.warn({ err: fail() }, 'the same message from elsewhere: another stack');
  log.warn({ err: 'not an Error' }, 'a string');
  const [first, again, other, text] = lines();
  t.match(first, { err: { message: 'no AWS credentials', stack: /^Error: no AWS credentials\n {4}at / } });
  t.notOk('stackSeen' in (first!.err as object));
  t.match(again, { msg: 'no AWS credentials yet', err: { type: 'Error', message: 'no AWS credentials', stackSeen: true } });
  t.notOk('stack' in (again!.err as object), 'not the frames again');
  t.match(other, { err: { stack: /^Error: no AWS credentials\n/ } });
  t.same(text!.err, 'not an Error');

  // 100 stacks are remembered: the 101st pushes out the oldest, which is then logged in full again.
  const { log: bounded, lines: boundedLines } = memoryLog('info');
  const errors = Array.from({ length: 101 }, (_, i) => new Error(`error ${i}`));
  for (const e of errors) bounded.warn({ err: e }, 'x');
  bounded.warn({ err: errors[100] }, 'x');
  bounded.warn({ err: errors[0] }, 'x');
  const [newest, oldest] = boundedLines().slice(-2);
  t.match(newest, { err: { stackSeen: true } });
  t.match(oldest, { err: { stack: /^Error: error 0\n/ } });

  // Each logger remembers its own: a second logger logs the stack again.
  const { log: another, lines: anotherLines } = memoryLog('info');
  another.warn({ err }, 'AWS credentials fetch failed');
  t.match(anotherLines()[0], { err: { stack: /^Error: no AWS credentials\n/ } });
});
