// examples/ as users copy it: every Kubernetes manifest parses and validates against the Kubernetes
// schemas (kubernetes-models), every flag, PG_IAM_PROXY_* variable and config file the examples use is
// one the CLI has, and the shapes the README promises hold (the native sidecar's probes, the Job's
// /quitquitquit, Compose's password beyond loopback, systemd's reload and exit codes).
import t, { type Test } from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { Pod } from 'kubernetes-models/v1/Pod';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { loadConfigFile } from '../src/config-file.js';
import { serveConfig } from '../src/commands/settings.js';
import { envName, OPTIONS, rowsOf } from '../src/options.js';

const examples = fileURLToPath(new URL('../../examples/', import.meta.url));
const read = (path: string) => readFileSync(join(examples, path), 'utf8');

type Manifest = Record<string, unknown> & { kind: string; metadata: { name: string } };
type Container = {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: Array<{ name: string; value?: string }>;
  restartPolicy?: string;
  startupProbe?: { httpGet?: { path: string } };
  livenessProbe?: { httpGet?: { path: string } };
  readinessProbe?: { httpGet?: { path: string } };
};
type PodSpec = {
  containers: Container[];
  initContainers?: Container[];
  serviceAccountName?: string;
  terminationGracePeriodSeconds?: number;
};

const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'apps/v1 Deployment': Deployment,
  'batch/v1 Job': Job,
  'v1 Pod': Pod,
  'v1 ServiceAccount': ServiceAccount,
};

/** Every document of every file under examples/kubernetes, parsed strictly. */
function manifests(): Array<{ file: string; doc: Manifest }> {
  const out: Array<{ file: string; doc: Manifest }> = [];
  for (const file of readdirSync(join(examples, 'kubernetes')).filter((f) => f.endsWith('.yaml'))) {
    for (const parsed of parseAllDocuments(read(`kubernetes/${file}`), { strict: true, uniqueKeys: true })) {
      if (parsed.errors.length > 0) throw new Error(`${file}: ${parsed.errors[0]!.message}`);
      out.push({ file, doc: parsed.toJS() as Manifest });
    }
  }
  return out;
}

/** The flags a command line passes (--flag or --flag=value), and the PG_IAM_PROXY_* names of an environment. */
const flagsIn = (args: readonly string[]) => args.filter((a) => a.startsWith('--')).map((a) => a.slice(2).split('=')[0]!);
const SERVE_FLAGS = new Set(rowsOf('serve').map((row) => row.flag));
const ENV_NAMES = new Set(OPTIONS.map((row) => envName(row.flag)));

function checkProxyContainer(t: Test, where: string, container: Container) {
  const flags = flagsIn(container.args ?? []);
  for (const flag of flags) t.ok(SERVE_FLAGS.has(flag), `${where}: --${flag} is an option of serve`);
  for (const { name } of container.env ?? []) {
    if (name.startsWith('PG_IAM_PROXY_')) t.ok(ENV_NAMES.has(name), `${where}: ${name} is an option's variable`);
  }
  // The endpoint, then flags: what the CLI itself makes of them (a bad value or combination exits 2).
  const args = (container.args ?? []).map((a) => a.split('='));
  const parsed: Record<string, unknown> = { endpoint: container.args![0] };
  for (const [flag, value] of args.slice(1)) parsed[flag!.slice(2)] = value ?? true;
  t.doesNotThrow(() => serveConfig(parsed as never, {}), `${where}: serve accepts its arguments`);
}

t.test('every Kubernetes manifest validates against the Kubernetes schemas', async (t) => {
  const all = manifests();
  t.ok(all.length >= 7, `${all.length} manifests`);
  for (const { file, doc } of all) {
    const key = `${String(doc.apiVersion)} ${doc.kind}`;
    const Model = MODELS[key];
    t.ok(Model, `${file}: ${key} is a kind the test knows`);
    if (!Model) continue;
    t.doesNotThrow(() => new Model(doc as never).validate(), `${file}: ${doc.kind} ${doc.metadata.name} is valid`);
  }
  // The check checks: a wrong type is refused.
  const broken = all.find((m) => m.doc.kind === 'Deployment')!.doc as unknown as { spec: { replicas: unknown } };
  t.throws(() => new Deployment({ ...broken, spec: { ...broken.spec, replicas: 'two' } } as never).validate(), /replicas/);
});

const podSpec = (doc: Manifest): PodSpec =>
  doc.kind === 'Pod' ? (doc.spec as PodSpec) : (doc as unknown as { spec: { template: { spec: PodSpec } } }).spec.template.spec;

t.test('the proxy containers: real flags, a native sidecar with the three probes, a Job that ends it', async (t) => {
  const all = manifests();
  for (const { file, doc } of all.filter((m) => m.doc.kind !== 'ServiceAccount')) {
    const spec = podSpec(doc);
    const proxy = [...(spec.initContainers ?? []), ...spec.containers].find((c) => c.name === 'pg-iam-proxy');
    t.ok(proxy, `${file}: has the proxy`);
    checkProxyContainer(t, file, proxy!);
  }
  const deployment = podSpec(all.find((m) => m.doc.kind === 'Deployment')!.doc);
  const sidecar = deployment.initContainers?.find((c) => c.name === 'pg-iam-proxy');
  t.match(
    sidecar,
    {
      restartPolicy: 'Always',
      startupProbe: { httpGet: { path: '/startup' } },
      livenessProbe: { httpGet: { path: '/healthz' } },
      readinessProbe: { httpGet: { path: '/readyz' } },
    },
    'a native sidecar: an init container that keeps running, held by its startupProbe',
  );
  t.ok(flagsIn(sidecar!.args!).includes('http'), 'the probes have a listener');
  const job = all.find((m) => m.doc.kind === 'Job')!;
  t.match(read(`kubernetes/${job.file}`), /curl -fsS -X POST http:\/\/127\.0\.0\.1:9090\/quitquitquit/, 'the Job ends its proxy');
  const names = all
    .filter((m) => m.doc.kind === 'ServiceAccount')
    .map((m) => Object.keys((m.doc.metadata as { annotations?: object }).annotations ?? {}));
  t.same(
    names.flat().sort(),
    ['azure.workload.identity/client-id', 'eks.amazonaws.com/role-arn', 'iam.gke.io/gcp-service-account'],
    'IRSA, GKE and AKS by annotation (Pod Identity has none)',
  );
  t.equal(names.length, 4);
  for (const { doc } of all.filter((m) => m.doc.kind !== 'ServiceAccount' && m.doc.kind !== 'Pod')) {
    t.equal(podSpec(doc).serviceAccountName, 'orders-api', `${doc.kind}: the ServiceAccount the files define`);
  }
});

t.test('Compose: the proxy beyond loopback demands a password; the config files are valid', async (t) => {
  const compose = parseAllDocuments(read('compose/compose.yaml'))[0]!.toJS() as {
    services: Record<string, { command?: string[]; environment?: Record<string, string>; volumes?: string[]; ports?: unknown }>;
  };
  const proxy = compose.services['pg-iam-proxy']!;
  for (const flag of flagsIn(proxy.command ?? [])) t.ok(SERVE_FLAGS.has(flag), `compose: --${flag}`);
  for (const name of Object.keys(proxy.environment ?? {}).filter((n) => n.startsWith('PG_IAM_PROXY_')))
    t.ok(ENV_NAMES.has(name), `compose: ${name}`);
  t.ok(
    proxy.volumes?.some((v) => /^~\/\.aws:\/home\/node\/\.aws$/.test(v)),
    '~/.aws mounted read-write, where the image user looks for it',
  );
  t.notOk(proxy.ports, 'the database port is not published to the host');
  t.equal(compose.services.app!.environment!.PGHOST, 'pg-iam-proxy', 'the app reaches the proxy by its service name');

  const settings = serveConfig({ config: join(examples, 'compose/proxy.yaml') } as never, {});
  const [instance] = settings.config.instances;
  t.match(instance, { listen: { host: '0.0.0.0', port: 5432 }, clientPasswordFile: '/run/secrets/client_password' });
  t.same(settings.warnings, [], 'no warning at start');
  // Without the password the same listener is refused: the reason the example has one.
  const file = loadConfigFile(join(examples, 'compose/proxy.yaml'));
  t.ok(file.instances[0]!.clientPasswordFile);

  const systemd = serveConfig({ config: join(examples, 'systemd/proxy.yaml') } as never, {});
  t.match(systemd, { http: { host: '127.0.0.1', port: 9090 }, requireCredentials: true });
  t.match(systemd.config.instances[0], { unixSocket: { dir: '/run/pg-iam-proxy' } });
});

t.test('systemd: the unit runs real flags, reloads with SIGHUP, waits out the grace', async (t) => {
  const unit = read('systemd/pg-iam-proxy.service');
  const value = (key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1];
  const exec = value('ExecStart')!.split(/\s+/);
  t.equal(exec[0], '/usr/local/bin/pg-iam-proxy');
  for (const flag of flagsIn(exec)) t.ok(SERVE_FLAGS.has(flag), `ExecStart: --${flag}`);
  t.equal(value('ExecReload'), '/bin/kill -HUP $MAINPID');
  t.equal(value('KillSignal'), 'SIGTERM');
  const grace = Number(serveConfig({ config: join(examples, 'systemd/proxy.yaml') } as never, {}).config.shutdownGraceMs) / 1000;
  t.ok(Number(value('TimeoutStopSec')) > grace, 'systemd waits longer than the drain');
  t.equal(value('SuccessExitStatus'), '143', 'a drain cut short is still a stop asked for');
  t.equal(value('RestartPreventExitStatus'), '2', 'a bad configuration is not restarted');
  t.match(read('systemd/pg-iam-proxy.service'), /^\[Install\]\nWantedBy=multi-user\.target$/m);
});
