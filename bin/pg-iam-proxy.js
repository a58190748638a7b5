#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in build/ (made by `npm ci` through the prepare script).
// main() resolves once everything worth saying is flushed; exiting here also ends a drain that a
// second signal cut short.
import { main } from '../build/src/cli.js';

process.exit(await main(process.argv.slice(2)));
