// The container image's recipe, checked without a Docker engine: the Dockerfile's instructions as a
// reviewer would read them, and the HEALTHCHECK script against a live and a dead /healthz.
import t from 'tap';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { closedPort } from './support/proxy.js';

const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));

/** Instructions with their arguments, continuation lines joined, comments dropped. */
function instructions(text: string): Array<{ op: string; args: string }> {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const [op, ...rest] = line.split(/\s+/);
      return { op: op!.toUpperCase(), args: rest.join(' ') };
    });
}

t.test('Dockerfile: multi-stage on Node 24 LTS slim, production dependencies, non-root, exec-form, healthcheck', async (t) => {
  const steps = instructions(readFileSync(root('Dockerfile'), 'utf8'));
  const known = new Set([
    'FROM',
    'WORKDIR',
    'COPY',
    'RUN',
    'ENV',
    'USER',
    'STOPSIGNAL',
    'EXPOSE',
    'HEALTHCHECK',
    'ENTRYPOINT',
    'CMD',
    'ARG',
    'LABEL',
  ]);
  for (const step of steps) t.ok(known.has(step.op), `known instruction ${step.op}`);
  const froms = steps.filter((s) => s.op === 'FROM');
  t.equal(froms.length, 2, 'two stages');
  t.match(steps[0], { op: 'ARG', args: 'NODE_IMAGE=node:24-slim' }, 'the base is an argument, Node 24 LTS slim by default');
  t.ok(
    froms.every((f) => /^\$\{NODE_IMAGE\}/.test(f.args)),
    'both stages on it',
  );
  const final = steps.slice(steps.lastIndexOf(froms[1]!));
  const run = steps.find((s) => s.op === 'RUN')?.args;
  t.match(run, /npm ci .*npm prune --omit=dev/, 'dev dependencies pruned after the build');
  t.match(
    run,
    /^--mount=type=secret,id=npm_ca,required=false .*NODE_EXTRA_CA_CERTS=\/run\/secrets\/npm_ca/,
    'extra CAs for npm as an optional build secret',
  );
  t.ok(
    final.some((s) => s.op === 'COPY' && /--from=build \/app\/node_modules/.test(s.args)),
    'only the pruned node_modules are copied',
  );
  t.notOk(
    final.some((s) => s.op === 'COPY' && /\b(src|test)\b/.test(s.args) && !/build\/src/.test(s.args)),
    'no sources or tests in the final image',
  );
  t.match(final.find((s) => s.op === 'USER')?.args, /^node$/, 'runs as the unprivileged node user');
  t.ok(final.findIndex((s) => s.op === 'USER') < final.findIndex((s) => s.op === 'ENTRYPOINT'));
  const entry = JSON.parse(final.find((s) => s.op === 'ENTRYPOINT')!.args) as string[];
  t.same(entry, ['node', '/app/bin/pg-iam-proxy.js'], 'exec form: node is PID 1 and receives SIGTERM');
  t.match(final.find((s) => s.op === 'HEALTHCHECK')?.args, /CMD \["node", "\/app\/bin\/healthcheck\.js"\]/);
  t.notOk(
    steps.some((s) => s.op === 'ADD'),
    'no ADD',
  );
  t.match(readFileSync(root('.dockerignore'), 'utf8'), /^node_modules$/m);
});

const healthcheck = (env: Record<string, string>) =>
  new Promise<number>((resolve) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG_IAM_PROXY_')));
    execFile(process.execPath, [root('bin/healthcheck.js')], { env: { ...clean, ...env } }, (err) =>
      resolve(err ? Number((err as { code?: number }).code) : 0),
    );
  });

t.test('the HEALTHCHECK script asks /healthz where PG_IAM_PROXY_HTTP says', async (t) => {
  let status = 200;
  const server = createServer((req, res) => res.writeHead(req.url === '/healthz' ? status : 404).end()).listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  t.equal(await healthcheck({}), 0, 'no HTTP endpoint configured: alive is healthy');
  t.equal(await healthcheck({ PG_IAM_PROXY_HTTP: `127.0.0.1:${port}` }), 0);
  t.equal(await healthcheck({ PG_IAM_PROXY_HTTP: `0.0.0.0:${port}` }), 0, 'a wildcard listener is asked on loopback');
  status = 500;
  t.equal(await healthcheck({ PG_IAM_PROXY_HTTP: `127.0.0.1:${port}` }), 1);
  t.equal(await healthcheck({ PG_IAM_PROXY_HTTP: `127.0.0.1:${await closedPort()}` }), 1, 'nothing listening: unhealthy');
});
