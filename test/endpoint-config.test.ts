import t from 'tap';
import { regionFromEndpoint } from '../src/aws/endpoint.js';
import { formatHostPort, parseHostPort } from '../src/host-port.js';
import { ConfigError, resolveInstance } from '../src/config.js';

t.test('host:port parsing', async (t) => {
  const rows: Array<[string, string, number]> = [
    ['db.example', 'db.example', 5432],
    ['db.example:6432', 'db.example', 6432],
    ['127.0.0.1:15432', '127.0.0.1', 15432],
    ['[::1]:5433', '::1', 5433],
    ['[::1]', '::1', 5432],
    ['::1', '::1', 5432],
  ];
  for (const [text, host, port] of rows) t.same(parseHostPort(text, 'x'), { host, port }, text);
  t.throws(() => parseHostPort('db:99999', '--listen'), /--listen: "99999" is not a port/);
  t.throws(() => parseHostPort('db:', '--listen'), /is not a port/);
  t.throws(() => parseHostPort(':5432', '--listen'), /is not a host/);
  t.throws(() => parseHostPort('db', '--listen', null), /needs a port/);
  t.equal(formatHostPort({ host: '::1', port: 1 }), '[::1]:1');
  t.equal(formatHostPort({ host: 'a', port: 1 }), 'a:1');
  const endpoint = { host: 'fe80::1', port: 5432 };
  t.equal(formatHostPort(endpoint), '[fe80::1]:5432');
  t.equal(formatHostPort(endpoint), '[fe80::1]:5432', 'the same endpoint again: its text as made the first time');
});

t.test('region from the endpoint name', async (t) => {
  const rows: Array<[string, string | undefined]> = [
    ['mydb.abc123xyz.us-east-1.rds.amazonaws.com', 'us-east-1'],
    ['orders.cluster-abc.eu-central-1.rds.amazonaws.com', 'eu-central-1'],
    ['orders.cluster-ro-abc.ap-southeast-2.rds.amazonaws.com', 'ap-southeast-2'],
    ['proxy.proxy-abc.us-gov-west-1.rds.amazonaws.com', 'us-gov-west-1'],
    ['db.abc.cn-north-1.rds.amazonaws.com.cn', 'cn-north-1'],
    ['db.internal.example.com', undefined],
    ['10.0.0.1', undefined],
  ];
  for (const [host, region] of rows) t.equal(regionFromEndpoint(host), region, host);
});

t.test('resolveInstance: defaults, precedence and errors', async (t) => {
  const { instance, warnings } = resolveInstance({ endpoint: 'mydb.abc123xyz.us-east-1.rds.amazonaws.com' }, 'eu-west-1');
  t.same(instance, {
    cloud: 'aws',
    endpoint: { host: 'mydb.abc123xyz.us-east-1.rds.amazonaws.com', port: 5432 },
    connectTo: { host: 'mydb.abc123xyz.us-east-1.rds.amazonaws.com', port: 5432 },
    listen: { host: '127.0.0.1', port: 5432 },
    region: 'us-east-1',
    caFile: undefined,
    dbUser: undefined,
    identity: {},
    unixSocket: undefined,
    clientTls: { mode: 'auto' },
    clientPasswordFile: undefined,
    allowUsers: undefined,
    allowDatabases: undefined,
  });
  t.ok(Object.isFrozen(instance));
  t.same(warnings, []);
  t.equal(
    resolveInstance({ endpoint: 'mydb.abc.us-east-1.rds.amazonaws.com', region: 'us-west-2' }).instance.region,
    'us-west-2',
    '--region wins',
  );
  t.equal(resolveInstance({ endpoint: 'db.corp.example' }, 'eu-west-1').instance.region, 'eu-west-1', 'AWS_REGION last');
  t.match(resolveInstance({ endpoint: 'db.corp.example' }, 'eu-west-1').warnings, [/not an \*\.rds\.amazonaws\.com name/]);
  t.match(resolveInstance({ endpoint: '10.1.2.3:5432', region: 'us-east-1' }).warnings, [/IP address.*--connect-to 10\.1\.2\.3:5432/]);
  t.throws(
    () => resolveInstance({ endpoint: 'db.corp.example' }),
    new ConfigError(
      'cannot tell the signing region for db.corp.example: it is not an RDS endpoint name (NAME.ID.REGION.rds.amazonaws.com); pass --region or set AWS_REGION',
    ),
  );
  t.throws(() => resolveInstance({ endpoint: 'a.b.us-east-1.rds.amazonaws.com', region: 'mars' }), /not an AWS region/);
  t.throws(() => resolveInstance({ endpoint: 'a.b.us-east-1.rds.amazonaws.com', listen: 'x:y' }), ConfigError);
  t.throws(() => resolveInstance({ endpoint: 'a.b.us-east-1.rds.amazonaws.com', dbUser: 'u'.repeat(64) }), /--db-user/);
  const tunnel = resolveInstance({ endpoint: 'a.b.us-east-1.rds.amazonaws.com', connectTo: '127.0.0.1:15432' }).instance;
  t.same(tunnel.connectTo, { host: '127.0.0.1', port: 15432 });
});

t.test('CA files: bundled by default, a file replaces them, a file without PEM is refused', async (t) => {
  const { upstreamTls } = await import('../src/aws/ca.js');
  const { writeFileSync, mkdtempSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  t.match(upstreamTls().source, { kind: 'bundled' });
  t.ok((upstreamTls().source as { count: number }).count >= 100, 'RDS regional CAs and Amazon roots');
  const dir = mkdtempSync(join(tmpdir(), 'ca-'));
  writeFileSync(join(dir, 'empty.pem'), 'not a certificate\n');
  t.throws(() => upstreamTls(join(dir, 'empty.pem')), /no PEM certificate in the file/);
  t.throws(() => upstreamTls(join(dir, 'missing.pem')), /--ca-file .*missing\.pem: ENOENT/);
});
