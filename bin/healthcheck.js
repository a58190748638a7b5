#!/usr/bin/env node
// Container HEALTHCHECK: GET /healthz on the address PG_IAM_PROXY_HTTP names. Without it there is no
// HTTP endpoint to ask, and the process being alive is all there is to check.
const address = process.env.PG_IAM_PROXY_HTTP;
if (!address) process.exit(0);
const hostPort = address.replace(/^(0\.0\.0\.0|\[::\]|::):/, '127.0.0.1:');
try {
  const res = await fetch(`http://${hostPort}/healthz`, { signal: AbortSignal.timeout(2_000) });
  process.exit(res.status === 200 ? 0 : 1);
} catch (err) {
  process.stderr.write(`healthcheck: ${err.cause?.code ?? err.message}\n`);
  process.exit(1);
}
