# syntax=docker/dockerfile:1
# Build: compile TypeScript with the dev dependencies, then keep only what runs.
FROM node:22-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bin ./bin
RUN npm ci --no-audit --no-fund --ignore-scripts \
 && npx tsc -p tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund

# Run: Node 22 LTS slim, production dependencies only, non-root.
FROM node:22-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/build/src ./build/src
USER node
# Node runs as PID 1 and handles SIGTERM itself: /readyz turns 503, sessions drain for
# --shutdown-grace seconds, exit 0. It starts no children in serve mode, so nothing needs reaping.
STOPSIGNAL SIGTERM
EXPOSE 5432 9090
# Asks /healthz when PG_IAM_PROXY_HTTP is set (e.g. 127.0.0.1:9090); otherwise liveness is the process.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 CMD ["node", "/app/bin/healthcheck.js"]
ENTRYPOINT ["node", "/app/bin/pg-iam-proxy.js"]
