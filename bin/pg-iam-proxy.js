#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in build/ (made by `npm ci` through the prepare script).
import { main } from '../build/src/cli.js';

process.exitCode = await main(process.argv.slice(2));
