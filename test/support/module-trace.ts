// Preloaded into a process under test (NODE_OPTIONS="--require <this file>", which, unlike --import,
// worker threads run too, as pino's transports do) to record every module it loads, one
// absolute path or URL per line, into the file named by MODULE_TRACE_FILE. CommonJS through
// Module.prototype.load (a require, or an import of a CommonJS file), ES modules through a resolve hook.
// Loaded with require() of an ES module, which Node 20.19 allows.
import { appendFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire, register } from 'node:module';
import { fileURLToPath } from 'node:url';

const file = process.env.MODULE_TRACE_FILE;
if (file) {
  const Module = createRequire(import.meta.url)('node:module') as { prototype: { load(this: unknown, filename: string): unknown } };
  const load = Module.prototype.load;
  Module.prototype.load = function (this: unknown, filename: string) {
    appendFileSync(file, `${filename}\n`);
    return load.call(this, filename);
  };
  register(new URL('./module-trace-hooks.js', import.meta.url), { data: { file } });
}

/** The modules a traced process loaded, deduplicated, as file paths. */
export async function tracedModules(file: string): Promise<string[]> {
  const lines = (await readFile(file, 'utf8')).split('\n').filter(Boolean);
  return [...new Set(lines.map((line) => (line.startsWith('file:') ? fileURLToPath(line) : line)))];
}

/** NODE_OPTIONS for a child to be traced into `file`: this module preloaded, the caller's options kept. */
export function traceEnv(file: string, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const self = fileURLToPath(import.meta.url);
  return { ...env, MODULE_TRACE_FILE: file, NODE_OPTIONS: `${env.NODE_OPTIONS ?? ''} --require "${self}"`.trim() };
}
