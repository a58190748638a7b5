# syntax=docker/dockerfile:1
# Build: compile TypeScript with the dev dependencies, then keep only what runs.
FROM node:22-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bin ./bin
RUN npm ci --no-audit --no-fund && npx tsc -p tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:22-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/build/src ./build/src
# Non-root; node is PID 1's child-free process and handles SIGTERM itself (drain, then exit 0).
USER node
# In a container the listener must be reachable from the app's network namespace (a sidecar shares it,
# so loopback still works there); override with --listen / PG_IAM_PROXY_LISTEN as needed.
ENTRYPOINT ["node", "/app/bin/pg-iam-proxy.js"]
