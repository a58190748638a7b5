// The cloud told by the endpoint's form, or by --cloud / PG_IAM_PROXY_CLOUD / `cloud:`; each cloud's
// settings checked where they are given (rows: {desc, input, want}).
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cloudOfEndpoint } from '../src/clouds/table.js';
import { parseCloudSqlName } from '../src/gcp/instance.js';
import { ConfigError, resolveInstance, type InstanceInput } from '../src/config.js';
import { parseCommandLine } from '../src/cli.js';
import { serveConfig } from '../src/commands/settings.js';
import type { Args } from '../src/options.js';

const dir = mkdtempSync(join(tmpdir(), 'pg-iam-proxy-clouds-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('the endpoint form names the cloud', async (t) => {
  const rows: Array<[string, string | undefined]> = [
    ['mydb.abc123xyz.us-east-1.rds.amazonaws.com', 'aws'],
    ['mydb.abc123xyz.us-east-1.rds.amazonaws.com:6432', 'aws'],
    ['mydb.postgres.database.azure.com', 'azure'],
    ['MyDb.Postgres.Database.Azure.Com:5432', 'azure'],
    ['mydb.privatelink.postgres.database.azure.com', 'azure'],
    ['my-project:us-central1:myinstance', 'gcp'],
    ['my-project:us-central1:myinstance:15432', 'gcp'],
    ['example.com:my-project:europe-west4:db-1', 'gcp'],
    ['db.internal.example', undefined],
    ['10.0.0.1:5432', undefined],
    ['my:project', undefined],
  ];
  for (const [text, cloud] of rows) t.equal(cloudOfEndpoint(text), cloud, text);
  t.same(parseCloudSqlName('example.com:my-project:europe-west4:db-1:6543'), {
    instance: {
      project: 'example.com:my-project',
      region: 'europe-west4',
      instance: 'db-1',
      connectionName: 'example.com:my-project:europe-west4:db-1',
    },
    port: 6543,
  });
});

t.test('resolveInstance per cloud', async (t) => {
  const azure = resolveInstance({ endpoint: 'mydb.postgres.database.azure.com', listen: null });
  t.match(azure.instance, { cloud: 'azure', endpoint: { host: 'mydb.postgres.database.azure.com', port: 5432 }, region: '', identity: {} });
  t.same(azure.warnings, []);
  const gcp = resolveInstance({ endpoint: 'my-project:us-central1:myinstance', listen: null });
  t.match(gcp.instance, {
    cloud: 'gcp',
    endpoint: { host: 'my-project:us-central1:myinstance', port: 5432 },
    region: 'us-central1',
    cloudSql: { instance: { project: 'my-project', instance: 'myinstance' }, api: 'https://sqladmin.googleapis.com' },
  });
  t.equal(gcp.instance.connectTo, gcp.instance.endpoint, 'dialled where the API says');
  const custom = resolveInstance({ endpoint: 'pg.internal.example:6432', cloud: 'azure', connectTo: '10.1.2.3:5432', listen: null });
  t.match(custom.instance, { cloud: 'azure', connectTo: { host: '10.1.2.3', port: 5432 } });
  t.match(custom.warnings, [/not a \*\.postgres\.database\.azure\.com name/]);
  const api = resolveInstance({ endpoint: 'p-12345:us-east1:i', cloud: 'gcp', sqladminApiEndpoint: 'http://127.0.0.1:9/', listen: null });
  t.equal(api.instance.cloudSql?.api, 'http://127.0.0.1:9', 'the base URL, less its trailing slash');
  t.match(resolveInstance({ endpoint: 'mydb.abc123xyz.us-east-1.rds.amazonaws.com', listen: null }).instance, { cloud: 'aws' });
});

t.test('settings that do not belong to the cloud are refused', async (t) => {
  const rows: Array<[string, InstanceInput, RegExp]> = [
    [
      'an AWS profile for Azure',
      { endpoint: 'mydb.postgres.database.azure.com', profile: 'app' },
      /--profile is an AWS setting.*DefaultAzureCredential/,
    ],
    [
      'a role for Cloud SQL',
      { endpoint: 'my-project:us-central1:i', roleArn: 'arn:aws:iam::123456789012:role/x' },
      /--role-arn is an AWS setting.*Application Default Credentials/,
    ],
    ['a region for Azure', { endpoint: 'mydb.postgres.database.azure.com', region: 'us-east-1' }, /--region is an AWS setting/],
    [
      'users: for Azure',
      { endpoint: 'mydb.postgres.database.azure.com', users: { a: { profile: 'p' } } },
      /users: identities per DB user are AWS identities/,
    ],
    ['a bad --cloud', { endpoint: 'db.example', cloud: 'oracle' }, /--cloud: "oracle" is not one of aws, azure, gcp/],
    ['--cloud gcp with a host name', { endpoint: 'db.example', cloud: 'gcp' }, /not a Cloud SQL instance connection name/],
    ['an IP for Azure', { endpoint: '10.0.0.1', cloud: 'azure' }, /is an IP address: Azure's certificate names the server/],
    [
      'the API for Azure',
      { endpoint: 'mydb.postgres.database.azure.com', sqladminApiEndpoint: 'http://x' },
      /--sqladmin-api-endpoint is a Cloud SQL setting/,
    ],
    [
      'the API for AWS',
      { endpoint: 'mydb.abc123xyz.us-east-1.rds.amazonaws.com', sqladminApiEndpoint: 'http://x' },
      /--sqladmin-api-endpoint is a Cloud SQL setting/,
    ],
    ['an API that is no URL', { endpoint: 'my-project:us-central1:i', sqladminApiEndpoint: 'sqladmin' }, /is not an http\(s\) URL/],
    [
      'the API in plain HTTP across a network',
      { endpoint: 'my-project:us-central1:i', sqladminApiEndpoint: 'http://sqladmin.example.com' },
      /plain HTTP to another host.*must be https/,
    ],
  ];
  for (const [desc, input, message] of rows) {
    let caught: unknown;
    try {
      resolveInstance({ listen: null, ...input });
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof ConfigError, `${desc}: a configuration error (exit 2)`);
    t.match((caught as Error).message, message, desc);
  }
});

t.test('--cloud and PG_IAM_PROXY_CLOUD on the command line', async (t) => {
  const flag = await parseCommandLine(['token', 'pg.internal.example', '--user', 'u', '--cloud', 'azure'], {});
  t.match(flag, { command: 'token', args: { cloud: 'azure' } });
  const env = await parseCommandLine(['token', 'pg.internal.example', '--user', 'u'], { PG_IAM_PROXY_CLOUD: 'gcp' });
  t.match(env, { args: { cloud: 'gcp' } });
  await t.rejects(parseCommandLine(['token', 'x', '--user', 'u', '--cloud', 'ibm'], {}), /Invalid values/);
});

t.test('a config file with an instance per cloud: `cloud:` per instance, `aws:` for the AWS ones only', async (t) => {
  const file = join(dir, 'three.yaml');
  writeFileSync(
    file,
    `aws: { profile: app }
instances:
  - endpoint: orders.cluster-abc.us-east-1.rds.amazonaws.com
    listen: 127.0.0.1:5432
  - endpoint: mydb.postgres.database.azure.com
    listen: 127.0.0.1:5433
  - endpoint: my-project:us-central1:myinstance
    listen: 127.0.0.1:5434
    sqladminApiEndpoint: http://127.0.0.1:8080
  - endpoint: pg.corp.example:5432
    cloud: azure
    connectTo: 10.0.0.5:5432
    listen: 127.0.0.1:5435
`,
  );
  const { config } = serveConfig({ config: file } as Args<'serve'>, {});
  t.same(
    config.instances.map((i) => [i.cloud, i.identity]),
    [
      ['aws', { profile: 'app' }],
      ['azure', {}],
      ['gcp', {}],
      ['azure', {}],
    ],
  );
  t.equal(config.instances[2]!.cloudSql?.api, 'http://127.0.0.1:8080');
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'instances:\n  - endpoint: mydb.postgres.database.azure.com\n    profile: x\n');
  t.throws(() => serveConfig({ config: bad } as Args<'serve'>, {}), /bad\.yaml:2: instances\[0\]: --profile is an AWS setting/);
});

t.test('token and doctor look a Cloud SQL connection name up in the file', async (t) => {
  const missing = join(dir, 'other.yaml');
  writeFileSync(missing, 'instances:\n  - endpoint: my-project:us-central1:other\n');
  const { main } = await import('../src/cli.js');
  const writes: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string) => (writes.push(String(chunk)), true)) as typeof process.stderr.write;
  try {
    t.equal(await main(['token', 'my-project:us-central1:myinstance', '--config', missing, '--user', 'u']), 2);
  } finally {
    process.stderr.write = write;
  }
  t.match(writes.join(''), /has no instance for my-project:us-central1:myinstance:5432 \(it has my-project:us-central1:other\)/);
});
