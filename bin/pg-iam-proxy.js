#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in build/ (made by `npm ci` through the prepare script).
// main() resolves once everything worth saying is flushed; exiting here also ends a drain that a
// second signal cut short.
import { setFlagsFromString } from 'node:v8';

// The young generation stays at its first size (1 MiB) instead of growing to 16: bulk transfers hand
// over a fresh 16 KiB buffer per TLS record, and with a grown young generation those buffers' external
// memory outpaces the scavenges and forces full mark-compacts (26 in three 200 MB COPYs; 1 with this).
// Read when the young generation would grow, so it takes effect here, before the CLI is loaded.
setFlagsFromString('--semi-space-growth-factor=1');

const { main } = await import('../build/src/cli.js');
process.exit(await main(process.argv.slice(2)));
