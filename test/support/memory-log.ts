// A logger whose JSON lines stay in memory: to assert on them, and that no secret reaches them.
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log.js';

type Entry = Record<string, unknown>;

export function memoryLog(level = 'debug') {
  let out = '';
  const waiters = new Set<{ match: (entry: Entry) => boolean; resolve: (entry: Entry) => void }>();
  const sink = new Writable({
    write(chunk, _enc, done) {
      out += String(chunk);
      for (const text of String(chunk).split('\n').filter(Boolean)) {
        const entry = JSON.parse(text) as Entry;
        for (const waiter of waiters) {
          if (!waiter.match(entry)) continue;
          waiters.delete(waiter);
          waiter.resolve(entry);
        }
      }
      done();
    },
  });
  const lines = () =>
    out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Entry);
  return {
    log: createLogger({ level, format: 'json' }, sink),
    raw: () => out,
    lines,
    /** The first line, written so far or later, that matches. */
    line: (match: (entry: Entry) => boolean): Promise<Entry> =>
      new Promise((resolve) => {
        const seen = lines().find(match);
        if (seen) resolve(seen);
        else waiters.add({ match, resolve });
      }),
  };
}
