# syntax=docker/dockerfile:1
# confsync: the daemon and the CLI in one image (docs/operations.md, "Container image").
#
#   docker build -t confsync:0.1.0 .
#   docker run --read-only --init \
#     -v /etc/confsync:/etc/confsync:ro \
#     -v /var/lib/confsync:/var/lib/confsync \
#     -v /var/lib/confsync-state:/var/lib/confsync-state \
#     --tmpfs /run/confsync:mode=0750,uid=10001,gid=10001 \
#     confsync:0.1.0
#
# Runs as uid/gid 10001 with a read-only root filesystem: it writes only under the
# three volumes, /var/lib/confsync (config files), /run/confsync (secrets: mount a
# tmpfs there — the daemon warns at start when plaintext secrets land on a disk) and
# /var/lib/confsync-state (its own state, 0700: the sealed local snapshot and the
# replay marks; persistent, never shared with readers of the config files).
# The config is read from /etc/confsync/config.yaml (mount it read-only).

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: all dependencies, compile TypeScript to dist/ ----
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# ---- deps: production dependencies only ----
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# ---- runtime ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# package.json: "type": "module" for dist/, and the version confsync reports.
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
# The volume mount points, owned by the daemon's uid so fresh volumes inherit it.
RUN mkdir -p /var/lib/confsync /run/confsync /var/lib/confsync-state /etc/confsync \
 && chown 10001:10001 /var/lib/confsync /run/confsync /var/lib/confsync-state \
 && chmod 0755 /var/lib/confsync \
 && chmod 0750 /run/confsync \
 && chmod 0700 /var/lib/confsync-state
USER 10001:10001
VOLUME ["/var/lib/confsync", "/run/confsync", "/var/lib/confsync-state"]
ENTRYPOINT ["node", "/app/dist/src/main.js"]
CMD ["run", "--config", "/etc/confsync/config.yaml"]
