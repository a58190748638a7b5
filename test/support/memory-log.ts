// A logger whose JSON lines stay in memory: to assert on them, and that no secret reaches them.
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log.js';

export function memoryLog(level = 'debug') {
  let out = '';
  const sink = new Writable({ write: (c, _e, done) => ((out += String(c)), done()) });
  return {
    log: createLogger({ level, format: 'json' }, sink),
    raw: () => out,
    lines: () =>
      out
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
