# The indexer worker image: `docker build -t embedding-indexer .`
# Runs `indexer worker` (all roles) by default; pass `worker --role ingest` etc. to split roles.
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
# (~150-250 MiB), so a bounded old space keeps its RSS under 512 MiB (npm run bench:backlog).
ENV NODE_OPTIONS=--max-old-space-size=256
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
USER node
ENTRYPOINT ["node", "bin/indexer.js"]
CMD ["worker"]
