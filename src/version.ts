// The package's version, for --version: read from the package.json two levels above build/src (in a
// clone and in the installed package alike); the single executable (scripts/binary.mjs) writes it in.
import { readFileSync } from 'node:fs';

export function version(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}
