#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in build/ (`npm run build` in a clone; the npm package carries it).
// main() resolves once everything worth saying is flushed; exiting here also ends a drain that a
// second signal cut short.
import { setFlagsFromString } from 'node:v8';
import { readPath } from '../build/src/net/user-buffer.js';

// V8's young generation keeps its first size instead of growing to 16 MiB or more: a fresh proxy that
// takes on 150 sessions grows by 27-46 KiB less per session on Node 20, 22, 24 and 26 alike
// (bench/results/lines.md, `npm run bench:lines`), for 0.5-2.6 µs more CPU per transaction. It is set
// only when the relay reads into its own buffers (src/net/user-buffer.ts): on Node's stream path,
// which makes a buffer per read, it doubles the CPU per transaction on Node 24 and 26 (48 against 30
// µs). V8 reads it when the young generation would grow, so it must come first, before start-up grows
// it. PG_IAM_PROXY_V8_DEFAULTS=1 leaves V8's defaults (bench:lines measures both ways, per Node line).
if (process.env.PG_IAM_PROXY_V8_DEFAULTS !== '1' && readPath().kind === 'user-buffer') setFlagsFromString('--semi-space-growth-factor=1');

const { main } = await import('../build/src/cli.js');
process.exit(await main(process.argv.slice(2)));
