// The config file's checks in process: each kind of wrong value, named by line and key.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfigFile } from '../src/config-file.js';
import { resolveInstance } from '../src/config.js';

const dir = mkdtempSync(join(tmpdir(), 'config-file-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const load = (yaml: string) => {
  const path = join(dir, `c${++n}.yaml`);
  writeFileSync(path, yaml);
  return () => loadConfigFile(path);
};
const E = 'mydb.abc123xyz.us-east-1.rds.amazonaws.com';

t.test('types and shapes', async (t) => {
  const rows: Array<[string, RegExp]> = [
    [
      `requireCredentials: yes please\ninstances: [{ endpoint: ${E} }]\n`,
      /:1: requireCredentials: a boolean is expected, not "yes please"/,
    ],
    [`log: info\ninstances: [{ endpoint: ${E} }]\n`, /:1: log: a mapping of keys is expected/],
    [`instances: { endpoint: ${E} }\n`, /:1: instances: a list is expected/],
    [`instances:\n  - endpoint: ${E}\n    unixSocketMode: [6, 0, 0]\n`, /:3: instances\[0\]\.unixSocketMode: a file mode is expected/],
    [`instances:\n  - endpoint: ${E}\n    unixSocketMode: true\n`, /:3: instances\[0\]\.unixSocketMode: a file mode is expected, not true/],
    [`instances:\n  - endpoint: { host: x }\n`, /:2: instances\[0\]\.endpoint: a string is expected/],
    [`instances:\n  - endpoint: ${E}\n    dbUser: true\n`, /:3: instances\[0\]\.dbUser: a string is expected, not true/],
    [
      `startupTimeout: .inf\ninstances: [{ endpoint: ${E} }]\n`,
      /:1: startupTimeout: Infinity is not a number of seconds greater than 0 and at most 3600/,
    ],
    [`a: 1\na: 2\n`, /:2: Map keys must be unique/],
  ];
  for (const [yaml, message] of rows) t.throws(load(yaml), { name: 'ConfigError', message }, message.source);
});

t.test('values as written: modes keep their digits, empty keys are absent, numbers as text', async (t) => {
  const file = load(
    `aws:\ninstances:\n  - endpoint: ${E}\n    listen: 127.0.0.1:6543\n    unixSocket: /tmp\n    unixSocketMode: 0660\n    dbUser: 1234\n`,
  )();
  t.match(file.instances[0], { endpoint: E, unixSocketMode: '0660', dbUser: '1234', line: 3 });
  t.equal(file.aws, undefined);
  const { instance } = resolveInstance({ ...file.instances[0]!, listen: '127.0.0.1:6543' });
  t.same(instance.unixSocket, { dir: '/tmp', port: 6543, mode: 0o660 });
  t.throws(() => resolveInstance({ endpoint: E, unixSocket: `/${'d'.repeat(120)}` }), /too long for a socket path/);
  t.same(resolveInstance({ endpoint: E, unixSocket: '/tmp', unixSocketMode: 0o640 }).instance.unixSocket?.mode, 0o640);
});

t.test('users: an identity per DB user, at the top level and per instance, checked like the flags', async (t) => {
  const path = join(dir, 'users.yaml');
  writeFileSync(
    path,
    [
      'users:',
      '  app_ro: { profile: readonly }',
      '  app_rw: { roleArn: arn:aws:iam::123456789012:role/top-rw }',
      'instances:',
      `  - endpoint: ${E}`,
      '    users:',
      '      app_rw: { roleArn: arn:aws:iam::123456789012:role/orders-rw, externalId: x-1 }',
      '',
    ].join('\n'),
  );
  const file = loadConfigFile(path);
  t.same(file.users, { app_ro: { profile: 'readonly' }, app_rw: { roleArn: 'arn:aws:iam::123456789012:role/top-rw' } });
  t.same(file.instances[0]!.users, { app_rw: { roleArn: 'arn:aws:iam::123456789012:role/orders-rw', externalId: 'x-1' } });
  const { instance } = resolveInstance({ endpoint: E, users: { ...file.users, ...file.instances[0]!.users } });
  t.same(Object.fromEntries(instance.users!), {
    app_ro: { profile: 'readonly' },
    app_rw: { roleArn: 'arn:aws:iam::123456789012:role/orders-rw', externalId: 'x-1' },
  });
  t.equal(resolveInstance({ endpoint: E }).instance.users, undefined, 'no users: every user signs with the instance identity');
  const bad: Array<[string, RegExp]> = [
    [`users: [app]\ninstances: [{ endpoint: ${E} }]\n`, /:1: users: a mapping of DB user names to identities is expected/],
    [`users:\n  app: { listen: 1 }\ninstances: [{ endpoint: ${E} }]\n`, /:2: users\.app\.listen: unknown key \(known here: profile/],
    [`users:\n  ${'x'.repeat(64)}: { profile: p }\ninstances: [{ endpoint: ${E} }]\n`, /:2: users: "x{64}" is not a PostgreSQL user name/],
  ];
  for (const [yaml, message] of bad) t.throws(load(yaml), { message }, yaml);
  t.throws(() => resolveInstance({ endpoint: E, users: { app: { roleArn: 'nope' } } }), {
    message: /^users\.app: --role-arn: "nope" is not an IAM role ARN/,
  });
});
