// The folder graph of src/ (docs/architecture.md): imports go one way. No two folders import each other,
// and no cloud's folder imports another cloud's (they share only what lies below them).
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));
const CLOUDS = ['aws', 'azure', 'gcp'];

/** Each room (a folder, or a file at the top) of src/ and the rooms it imports, type-only imports included. */
function graph(): Map<string, Set<string>> {
  const edges = new Map<string, Set<string>>();
  const room = (path: string) => {
    const rel = relative(SRC, path);
    return rel.includes('/') ? rel.split('/')[0]! : rel.replace(/\.ts$/, '');
  };
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts')) {
        const from = room(path);
        for (const m of readFileSync(path, 'utf8').matchAll(/from '(\.{1,2}\/[^']+)'|import\('(\.{1,2}\/[^']+)'\)/g)) {
          const to = room(normalize(join(dirname(path), (m[1] ?? m[2])!.replace(/\.js$/, '.ts'))));
          if (to !== from) edges.set(from, (edges.get(from) ?? new Set()).add(to));
        }
      }
    }
  };
  walk(SRC);
  return edges;
}

t.test('no two folders of src/ import each other', async (t) => {
  const edges = graph();
  const folders = readdirSync(SRC).filter((name) => statSync(join(SRC, name)).isDirectory());
  const mutual = folders.flatMap((a) =>
    folders.filter((b) => a < b && edges.get(a)?.has(b) && edges.get(b)?.has(a)).map((b) => `${a} <-> ${b}`),
  );
  t.same(mutual, []);
  t.ok(edges.get('proxy')?.has('pool'), 'the graph is read (the engine makes the pools)');
});

t.test("no cloud imports another cloud's folder", async (t) => {
  const edges = graph();
  t.same(
    CLOUDS.flatMap((a) => CLOUDS.filter((b) => a !== b && edges.get(a)?.has(b)).map((b) => `${a} -> ${b}`)),
    [],
  );
  t.notOk(
    CLOUDS.some((cloud) => edges.get('oauth')?.has(cloud)),
    'the shared token machinery knows no cloud',
  );
});
