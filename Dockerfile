# syntax=docker/dockerfile:1
# Build: compile TypeScript with the dev dependencies, then keep only what runs. NODE_IMAGE is the base
# of both stages: the official image anywhere (Node 24, the active LTS line), or a stand-in with the
# same layout where no registry is reachable (test/support/image.ts builds one from Debian's packages).
ARG NODE_IMAGE=node:24-slim
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bin ./bin
# npm_ca (optional build secret): extra CA certificates for a network that inspects TLS, e.g.
#   docker build --secret id=npm_ca,src=/etc/ssl/certs/ca-certificates.crt .
# Used by npm only, never written to a layer.
RUN --mount=type=secret,id=npm_ca,required=false \
    if [ -s /run/secrets/npm_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca; fi \
 && npm ci --no-audit --no-fund --ignore-scripts \
 && npx tsc -p tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf node_modules/@azure/msal-browser \
 && find node_modules -name '*.map' -type f -delete
# @azure/msal-browser (20 MB) serves only @azure/identity's browser build; source maps serve no one here.

# Run: the same Node, production dependencies only, non-root.
FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/build/src ./build/src
USER node
# Node runs as PID 1 and handles SIGTERM itself: /readyz turns 503, sessions drain for
# --shutdown-grace seconds, exit 0 (143 when the grace cuts the drain short).
# It does start children when credentials come from a program: a profile's credential_process (through
# /bin/sh), the Azure CLI, azd or PowerShell (DefaultAzureCredential), an executable source of Google's
# workload identity federation. Node waits for its own children but not for what they leave behind: an
# orphan is re-parented to PID 1 and, never waited for, stays a zombie. With such a credential source run
# the image under an init that reaps: `docker run --init` (tini), `podman run --init` (catatonit),
# Compose's `init: true`, or in Kubernetes `shareProcessNamespace: true` (the pod's pause process is PID 1).
STOPSIGNAL SIGTERM
# The proxy listens on 127.0.0.1 unless told otherwise, and that is this container's own loopback:
# EXPOSE (and -p 5432:5432) reach nothing until it listens on 0.0.0.0:5432, which it refuses without
# --client-password-file; an app sharing the container's network namespace (a pod) needs neither.
EXPOSE 5432 9090
# Asks /healthz when PG_IAM_PROXY_HTTP is set (e.g. 127.0.0.1:9090); otherwise liveness is the process.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 CMD ["node", "/app/bin/healthcheck.js"]
ENTRYPOINT ["node", "/app/bin/pg-iam-proxy.js"]
