#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in build/ (made by `npm ci` through the prepare script).
// main() resolves once everything worth saying is flushed; exiting here also ends a drain that a
// second signal cut short.
import { setFlagsFromString } from 'node:v8';

// V8's young generation keeps its first size (1 MiB) instead of growing to 16 MiB. Bulk transfers
// hand over a fresh 16 KiB buffer per TLS record; with a grown young generation the buffers' external
// memory outruns the scavenges and forces full mark-compacts (25 in three 200 MB COPYs; 1 with this,
// for 30% less CPU and 10% less time), and an idle sidecar does not keep tens of MiB of young
// generation resident. V8 reads it when the young generation would grow, so it works at run time; it
// must come first, before start-up grows the young generation. Measured on each supported line
// (bench/results/flags.md, npm run bench:flags): with it, COPY out costs 34-46% less CPU on Node 20, 24
// and 26, and select-only 0-20% less CPU per transaction (Node 24: 23.8 against 29.9 µs).
// PG_IAM_PROXY_V8_DEFAULTS=1 leaves V8's defaults (npm run bench:flags measures both ways, per Node line).
if (process.env.PG_IAM_PROXY_V8_DEFAULTS !== '1') setFlagsFromString('--semi-space-growth-factor=1');

const { main } = await import('../build/src/cli.js');
process.exit(await main(process.argv.slice(2)));
