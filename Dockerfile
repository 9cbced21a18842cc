# Container images of the workers. Build from the repository root (README.md, "Container image"):
#
#   docker build --platform linux/amd64 -t registry.digitalocean.com/<registry>/external:latest .
#   docker build --platform linux/amd64 --target workflow-worker -t <image> .
#
# The default (last) target is the external worker, the image each run deploys on DigitalOcean
# App Platform. It needs BuildKit (cache mounts) and no `# syntax=` line: BuildKit's built-in
# frontend runs it, so no frontend image is pulled. Where no registry is reachable,
# `scripts/docker-base-images.sh` makes local stand-ins for the two base images (README.md,
# "Building offline"). `.ci/packaging` lints this file with hadolint, builds both targets with
# `--network none`, runs them as 65532, and checks with ldd that the binaries need only what the
# runtime image has.

# --- builder: the toolchain is pinned; bookworm matches the runtime image's glibc (2.36).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The context is what .dockerignore lets through: Cargo.toml, Cargo.lock, crates/, tests/.
COPY . .
# Cache mounts keep the crates.io registry and target/ between builds, so a source change
# recompiles only the workspace crates, not every dependency. The binaries are copied out of
# the cached target/ because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin external-worker --bin workflow-worker \
    && mkdir -p /out \
    && cp target/release/external-worker target/release/workflow-worker /out/

# --- runtime images: distroless cc (glibc, libgcc_s, CA certificates; no shell, no package
# manager). TLS to Temporal Cloud and the DigitalOcean API uses rustls, so no OpenSSL is needed.
# Pinned by tag; pin a digest too (`cc-debian12:nonroot@sha256:...`) for byte-reproducible images.

# `--target workflow-worker`: the workflow-worker. The external-worker sits next to it, so the
# local compute provider (COMPUTE_PROVIDER=local, the default) finds it without configuration.
FROM gcr.io/distroless/cc-debian12:nonroot AS workflow-worker
LABEL org.opencontainers.image.title="workflow-worker" \
      org.opencontainers.image.description="Temporal workflow-worker: provisions external compute for a long-running activity" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/workflow-worker /out/external-worker /usr/local/bin/
# distroless "nonroot" is uid/gid 65532; numeric, so runAsNonRoot policies can verify it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/workflow-worker"]

# Default target: the external worker. It only polls Temporal (outbound), so no port is exposed.
FROM gcr.io/distroless/cc-debian12:nonroot AS external-worker
LABEL org.opencontainers.image.title="external-worker" \
      org.opencontainers.image.description="Temporal activity-only worker running long-running-command" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/external-worker /usr/local/bin/external-worker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/external-worker"]
