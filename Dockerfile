# The indexer worker image: `docker build -t embedding-indexer .`
# Runs `indexer worker` (all roles) by default; pass `worker --role ingest` etc. to split roles, as
# docker-compose.yml and deploy/k8s/ do (test/unit/deploy/ checks that the three agree).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY workers ./workers
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
# V8 grows its heap lazily up to ~4 GiB; the worker's live data is bounded by the jobs it holds
# (~150-250 MiB), so a bounded old space keeps its RSS under 512 MiB with Qdrant
# (npm run bench:backlog -- --sink qdrant-contract). glibc gives each native thread that allocates
# an arena of its own; LanceDB's threads then keep ~100 MiB more than they use: two arenas are
# enough for a worker (bench:backlog on LanceDB: peak RSS 642 -> 545 MiB). glibc also raises its
# mmap threshold (up to 32 MiB) each time a large block is freed, so LanceDB's large buffers move
# into the arenas and their freed pages stay resident: the worker's RSS then grows with the table
# (bench:backlog -- --seconds 300: 430 MiB at first, 850-920 MiB at 750k rows). Fixed mmap and
# trim thresholds give those pages back: 340-505 MiB throughout, a few spikes aside, ~8% slower.
ENV NODE_OPTIONS=--max-old-space-size=256 MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072
# /metrics, /healthz and /readyz on 9464, on every interface: 127.0.0.1 (the default outside a
# container) is unreachable from outside the container. The read-write queue dashboard shares the
# port, so it is off unless asked for (it then needs DASHBOARD_PASSWORD or DASHBOARD_PASSWORD_FILE).
ENV METRICS_PORT=9464 METRICS_HOST=0.0.0.0 DASHBOARD_ENABLED=false
EXPOSE 9464
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
USER node
ENTRYPOINT ["node", "bin/indexer.js"]
CMD ["worker"]
# Docker's own health status, for `docker run` and compose (Kubernetes probes /healthz and /readyz
# itself). The slim image has no curl: Node's fetch does it. One-off commands (search, produce)
# serve no port and show as unhealthy, harmlessly.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.METRICS_PORT}/healthz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
