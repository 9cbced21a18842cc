#!/usr/bin/env bash
# Local stand-ins for the two base images the Dockerfile names, for an engine that cannot pull
# (no registry reachable). Built from Debian's packages (debootstrap) and this machine's own Rust
# toolchain, imported with `docker import`, and tagged with exactly the Dockerfile's names:
#
#   rust:1.95-bookworm                       Debian bookworm (minbase) + gcc, libc6-dev,
#                                            pkg-config, make, ca-certificates + the machine's
#                                            Rust 1.95 toolchain under rustup, with the official
#                                            image's RUSTUP_HOME, CARGO_HOME and PATH
#   gcr.io/distroless/cc-debian12:nonroot    glibc (libc, libm, the loader, ...), libgcc_s, CA
#                                            certificates, /etc/passwd and /etc/group with
#                                            nonroot 65532, /tmp; runs as 65532
#
# Idempotent: an image that already carries this recipe's label is left as it is (a second run
# takes about a second). A tag held by an image that is not ours (the real one, pulled where a
# registry is reachable) is never overwritten. The debootstrap root is cached under
# $TEA_DOCKER_CACHE (default /var/cache/tea-docker), so re-making the images needs no download.
#
# Usage (as root, with the Docker daemon running): scripts/docker-base-images.sh
#   TEA_DOCKER_CACHE=DIR   where the debootstrap root is cached
#   DEBIAN_MIRROR=URL      the Debian mirror debootstrap uses (default: the machine's own, the
#                          first Debian archive in its APT sources; else debootstrap's default)
#   FORCE=1                re-make our images even when they are up to date (keeps the cache)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILDER_IMAGE=rust:1.95-bookworm
RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
RUST_VERSION=1.95.0
RUST_TRIPLE=x86_64-unknown-linux-gnu
SUITE=bookworm

# The machine's own Debian archive: the first URI of its APT sources (deb822 or one-line
# format) serving the main archive (not -security, -updates or another vendor's repository).
machine_debian_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $file ]] || continue
        awk '
            /^[[:space:]]*#/ { next }
            $1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
            $1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; break } }
        ' "$file"
    done | grep -E '/debian/?$' | head -n 1
}
MIRROR=${DEBIAN_MIRROR:-$(machine_debian_mirror)}
CACHE=${TEA_DOCKER_CACHE:-/var/cache/tea-docker}
# What a Rust build needs on top of minbase (the official image has these and more: it is
# buildpack-deps, with git, curl and the -dev packages of common C libraries; this workspace
# needs none of those: TLS is rustls, the protobuf compiler is vendored, no git dependency).
BUILDER_PACKAGES=ca-certificates,gcc,libc6-dev,pkg-config,make
# The Debian packages whose shared libraries make the distroless cc runtime.
RUNTIME_LIB_PACKAGES=(libc6 libgcc-s1)
# Bump when what the images contain changes: images with another recipe are re-made.
RECIPE_VERSION=1
LABEL_KEY=io.github.temporal-external-activity.base-image

log() { printf '==> %s\n' "$*"; }
fail() {
    printf 'docker-base-images: ERROR: %s\n' "$*" >&2
    exit 1
}

# --- preconditions --------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || fail "run as root (debootstrap and the cache under ${CACHE} need it)"
command -v docker >/dev/null 2>&1 || fail "the docker CLI is not installed"
docker info >/dev/null 2>&1 || fail "the Docker daemon is not reachable (docker info failed)"
[[ $(uname -m) == x86_64 ]] || fail "only x86_64 is supported (the toolchain copied in is ${RUST_TRIPLE})"

# The Dockerfile must still name exactly these images.
for image in "$BUILDER_IMAGE" "$RUNTIME_IMAGE"; do
    grep -qE "^FROM ${image//./\\.}( |$)" Dockerfile ||
        fail "the Dockerfile no longer has 'FROM ${image}'; keep this script in step with it"
done

# The machine's toolchain: the one rustup resolves for the pinned version.
command -v rustup >/dev/null 2>&1 || fail "rustup is not installed (the toolchain is copied from it)"
rustup_bin=$(readlink -f "$(command -v rustup)")
sysroot=$(rustup run "${RUST_VERSION}" rustc --print sysroot 2>/dev/null) ||
    sysroot=$(rustc --print sysroot)
sysroot=$(readlink -f "$sysroot")
rustc_version=$("${sysroot}/bin/rustc" --version)
[[ $rustc_version == "rustc ${RUST_VERSION} "* ]] ||
    fail "the machine's toolchain is '${rustc_version}', not Rust ${RUST_VERSION} (${BUILDER_IMAGE})"
[[ -d ${sysroot}/lib/rustlib/${RUST_TRIPLE} ]] || fail "${sysroot} has no ${RUST_TRIPLE} target"

# Everything that goes into an image, so a change of any of it re-makes the images.
recipe=$(printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$BUILDER_PACKAGES" "${RUNTIME_LIB_PACKAGES[*]}" \
    "$rustc_version" "$("${sysroot}/bin/cargo" --version)" "$("$rustup_bin" --version 2>/dev/null | head -n1)" |
    sha256sum | cut -c1-16)

# Prints "ours", "stale" (ours, another recipe), "foreign" (not made by this script) or "missing".
image_state() {
    local label
    if ! label=$(docker image inspect --format "{{ index .Config.Labels \"${LABEL_KEY}\" }}" "$1" 2>/dev/null); then
        echo missing
    elif [[ $label == "$recipe" ]]; then
        echo ours
    elif [[ -n $label && $label != "<no value>" ]]; then
        echo stale
    else
        echo foreign
    fi
}

builder_state=$(image_state "$BUILDER_IMAGE")
runtime_state=$(image_state "$RUNTIME_IMAGE")
[[ ${FORCE:-0} == 1 && $builder_state == ours ]] && builder_state=stale
[[ ${FORCE:-0} == 1 && $runtime_state == ours ]] && runtime_state=stale
for pair in "${BUILDER_IMAGE}:${builder_state}" "${RUNTIME_IMAGE}:${runtime_state}"; do
    image=${pair%:*} state=${pair##*:}
    case $state in
    ours) log "${image}: up to date (recipe ${recipe})" ;;
    foreign) log "${image}: exists and was not made by this script (a pulled image?); left as it is" ;;
    stale) log "${image}: made from another recipe; re-making it" ;;
    missing) log "${image}: missing; making it" ;;
    esac
done
make_images=0
[[ $builder_state == @(missing|stale) || $runtime_state == @(missing|stale) ]] && make_images=1

make_images() {
    # --- the Debian root, cached ----------------------------------------------------------------
    rootfs_key=$(printf '%s\n' "$SUITE" "$BUILDER_PACKAGES" | sha256sum | cut -c1-12)
    rootfs="${CACHE}/${SUITE}-minbase-${rootfs_key}"
    if [[ -f ${rootfs}/.complete ]]; then
        log "Debian root: cached at ${rootfs}"
    else
        if ! command -v debootstrap >/dev/null 2>&1; then
            log "installing debootstrap (apt-get)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
                { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
                fail "could not install debootstrap"
        fi
        log "Debian root: debootstrap --variant=minbase ${SUITE} from ${MIRROR:-the default mirror of debootstrap} (a few minutes, once)"
        rm -rf "${rootfs}.partial"
        mkdir -p "$CACHE"
        started=$SECONDS
        if ! nice -n 10 debootstrap --variant=minbase --include="${BUILDER_PACKAGES}" \
            "$SUITE" "${rootfs}.partial" ${MIRROR:+"$MIRROR"} >"${rootfs}.log" 2>&1; then
            tail -n 20 "${rootfs}.log" >&2
            fail "debootstrap failed (log: ${rootfs}.log)"
        fi
        # Slim it as the official Debian images are: no apt lists, no package caches, no logs.
        chroot "${rootfs}.partial" apt-get clean
        rm -rf "${rootfs}.partial"/var/lib/apt/lists/* "${rootfs}.partial"/var/log/*.log \
            "${rootfs}.partial"/var/cache/debconf/*-old "${rootfs}.partial"/tmp/* \
            "${rootfs}.partial"/var/log/apt/* "${rootfs}.partial"/var/cache/ldconfig/aux-cache
        touch "${rootfs}.partial/.complete"
        rm -rf "$rootfs"
        mv "${rootfs}.partial" "$rootfs"
        log "Debian root: done in $((SECONDS - started))s ($(du -sh "$rootfs" | cut -f1))"
    fi

    work=$(mktemp -d "${CACHE}/work.XXXXXX")
    trap 'rm -rf "$work"' EXIT

    # --- rust:1.95-bookworm ---------------------------------------------------------------------
    if [[ $builder_state == @(missing|stale) ]]; then
        started=$SECONDS
        log "${BUILDER_IMAGE}: importing the Debian root + ${rustc_version} (from ${sysroot})"
        # rustup with its proxies (cargo, rustc, ...) in CARGO_HOME/bin, the toolchain under
        # RUSTUP_HOME, as the official image lays them out. CARGO_HOME and RUSTUP_HOME are
        # world-writable as there; the toolchain's own files keep their modes.
        stage="${work}/builder"
        mkdir -p "${stage}/usr/local/cargo/bin" "${stage}/usr/local/rustup/toolchains" \
            "${stage}/usr/local/rustup/downloads" "${stage}/usr/local/rustup/tmp" \
            "${stage}/usr/local/rustup/update-hashes"
        install -m 0755 "$rustup_bin" "${stage}/usr/local/cargo/bin/rustup"
        for proxy in cargo cargo-clippy cargo-fmt clippy-driver rust-gdb rust-gdbgui rust-lldb \
            rustc rustdoc rustfmt; do
            ln "${stage}/usr/local/cargo/bin/rustup" "${stage}/usr/local/cargo/bin/${proxy}"
        done
        cat >"${stage}/usr/local/rustup/settings.toml" <<EOF
version = "12"
default_toolchain = "${RUST_VERSION}-${RUST_TRIPLE}"
profile = "minimal"
auto_self_update = "disable"

[overrides]
EOF
        chmod -R a+w "${stage}/usr/local/cargo" "${stage}/usr/local/rustup"
        toolchain_dir="./usr/local/rustup/toolchains/${RUST_VERSION}-${RUST_TRIPLE}"
        # One tar stream: the Debian root, the staged rustup files, then the toolchain renamed into
        # RUSTUP_HOME (its HTML docs, ~800 MB, left out; the official image has none either).
        tar --numeric-owner -cf - \
            -C "$rootfs" --exclude=./.complete . \
            -C "$stage" ./usr/local/cargo ./usr/local/rustup \
            -C "$(dirname "$sysroot")" --exclude="./$(basename "$sysroot")/share/doc" \
            --transform="flags=rh;s,^\./$(basename "$sysroot"),${toolchain_dir}," \
            "./$(basename "$sysroot")" |
            docker import \
                --change "ENV RUSTUP_HOME=/usr/local/rustup" \
                --change "ENV CARGO_HOME=/usr/local/cargo" \
                --change "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
                --change "ENV RUST_VERSION=${RUST_VERSION}" \
                --change "LABEL ${LABEL_KEY}=${recipe}" \
                --change 'CMD ["bash"]' \
                --message "local stand-in for ${BUILDER_IMAGE} (scripts/docker-base-images.sh)" \
                - "$BUILDER_IMAGE" >/dev/null
        docker run --rm --network none "$BUILDER_IMAGE" cargo --version >/dev/null ||
            fail "${BUILDER_IMAGE}: cargo does not run in the imported image"
        log "${BUILDER_IMAGE}: made in $((SECONDS - started))s, $(docker image inspect --format '{{.Size}}' "$BUILDER_IMAGE" | numfmt --to=iec)"
    fi

    # --- gcr.io/distroless/cc-debian12:nonroot --------------------------------------------------
    if [[ $runtime_state == @(missing|stale) ]]; then
        started=$SECONDS
        log "${RUNTIME_IMAGE}: importing glibc, libgcc_s and CA certificates from the Debian root"
        stage="${work}/runtime"
        mkdir -p "${stage}/usr/lib" "${stage}/usr/lib64" "${stage}/usr/bin" "${stage}/usr/sbin" \
            "${stage}/etc/ssl/certs" "${stage}/tmp" "${stage}/home/nonroot" "${stage}/root" \
            "${stage}/var/lib/dpkg/status.d" "${stage}/usr/share/doc"
        # merged /usr, as Debian 12 and distroless have it
        for dir in bin sbin lib lib64; do ln -s "usr/${dir}" "${stage}/${dir}"; done
        # The packages' shared libraries (and the loader), without gconv modules or other data.
        # Paths dpkg lists under /lib are the same files under /usr/lib here (merged /usr).
        for package in "${RUNTIME_LIB_PACKAGES[@]}"; do
            chroot "$rootfs" dpkg-query -L "$package" |
                grep -E '^/(usr/)?lib(64)?/([^/]+/)?[^/]+\.so[.0-9]*$' |
                sed -E 's,^/(lib|lib64)/,/usr/\1/,' |
                while read -r file; do
                    [[ -e ${rootfs}${file} || -L ${rootfs}${file} ]] || continue
                    mkdir -p "${stage}$(dirname "$file")"
                    cp -a "${rootfs}${file}" "${stage}${file}"
                done
            # What distroless records of the package (scanners read it); the copyright travels too.
            chroot "$rootfs" dpkg-query -s "$package" >"${stage}/var/lib/dpkg/status.d/${package}"
            if [[ -f ${rootfs}/usr/share/doc/${package}/copyright ]]; then
                mkdir -p "${stage}/usr/share/doc/${package}"
                cp "${rootfs}/usr/share/doc/${package}/copyright" "${stage}/usr/share/doc/${package}/"
            fi
        done
        [[ -L ${stage}/usr/lib64/ld-linux-x86-64.so.2 || -f ${stage}/usr/lib64/ld-linux-x86-64.so.2 ]] &&
            [[ -f ${stage}/usr/lib/x86_64-linux-gnu/libc.so.6 ]] ||
            fail "${RUNTIME_IMAGE}: the loader or libc.so.6 was not found in the Debian root"
        cp "${rootfs}/etc/ssl/certs/ca-certificates.crt" "${stage}/etc/ssl/certs/ca-certificates.crt"
        cp "${rootfs}/etc/os-release" "${stage}/etc/os-release"
        cp "${rootfs}/etc/nsswitch.conf" "${stage}/etc/nsswitch.conf"
        # The users and groups of distroless's base image.
        cat >"${stage}/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
        cat >"${stage}/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
        chmod 0644 "${stage}/etc/passwd" "${stage}/etc/group"
        chmod 1777 "${stage}/tmp"
        chmod 0700 "${stage}/root" "${stage}/home/nonroot"
        chown 65532:65532 "${stage}/home/nonroot"
        tar --numeric-owner -cf - -C "$stage" . |
            docker import \
                --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
                --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
                --change "USER 65532:65532" \
                --change "WORKDIR /home/nonroot" \
                --change "LABEL ${LABEL_KEY}=${recipe}" \
                --message "local stand-in for ${RUNTIME_IMAGE} (scripts/docker-base-images.sh)" \
                - "$RUNTIME_IMAGE" >/dev/null
        log "${RUNTIME_IMAGE}: made in $((SECONDS - started))s, $(docker image inspect --format '{{.Size}}' "$RUNTIME_IMAGE" | numfmt --to=iec)"
    fi

}
[[ $make_images == 0 ]] || make_images

log "base images ready:"
docker image ls --format '    {{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' "${BUILDER_IMAGE%%:*}"
docker image ls --format '    {{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' "${RUNTIME_IMAGE%%:*}"

# --- the build's cargo registry, offline ----------------------------------------------------
# The builder stage's `cargo build --locked` downloads crates into a BuildKit cache mount
# (target=/usr/local/cargo/registry). Where a container cannot download them (here: crates.io
# is reached only through this machine's own TLS trust, which a container does not share),
# that cache mount is filled from this machine's CARGO_HOME instead: `cargo fetch --locked` on
# the host, then a throwaway build with no network copies the registry's index and .crate files
# into the same cache mount (a cache mount's id is its target path, shared by every build on
# the engine). The image build then finds every crate already downloaded and needs no network
# (`docker build --network none` proves it). Nothing is added to the Dockerfile or the image.
# SEED_CARGO_CACHE=0 skips this (where containers download crates themselves).
if [[ ${SEED_CARGO_CACHE:-1} == 1 ]]; then
    started=$SECONDS
    # A docker CLI that builds with BuildKit (cache mounts): one with the buildx plugin, or
    # Debian's docker.io CLI (20.10, BuildKit built in) when the CLI on PATH has no buildx.
    if docker buildx version >/dev/null 2>&1; then
        docker_bk=docker
    elif [[ -x /usr/bin/docker ]] && [[ $(/usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null) == 20.* ]]; then
        docker_bk=/usr/bin/docker
    else
        fail "no docker CLI here builds with BuildKit: install the buildx plugin (Debian: docker-buildx, from trixie on)"
    fi
    grep -qF -- '--mount=type=cache,target=/usr/local/cargo/registry,sharing=locked' Dockerfile ||
        fail "the Dockerfile no longer caches /usr/local/cargo/registry as this script seeds it"
    host_registry="${CARGO_HOME:-${HOME}/.cargo}/registry"
    log "cargo registry: cargo fetch --locked on this machine, into ${host_registry}"
    cargo fetch --locked --quiet --target "$RUST_TRIPLE" ||
        fail "cargo fetch --locked failed: the crates of Cargo.lock cannot be downloaded"
    seed=$(mktemp -d /tmp/tea-cargo-seed.XXXXXX)
    trap 'rm -rf "$seed"' EXIT
    cat >"${seed}/Dockerfile" <<EOF
FROM ${BUILDER_IMAGE} AS seed
# A new value each time, so this step always runs: BuildKit may have dropped the cache mount
# while keeping this step's cached result.
ARG SEED_RUN
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \\
    --mount=type=bind,target=/seed \\
    echo "seed \${SEED_RUN}" && cp -a -u /seed/index /seed/cache /usr/local/cargo/registry/ \\
    && echo "\$(ls /usr/local/cargo/registry/cache/*/ | wc -l) crates, \$(du -sh /usr/local/cargo/registry | cut -f1)" >/seeded
FROM scratch
COPY --from=seed /seeded /
EOF
    log "cargo registry: copying its index and crates into the build's cache mount (no network)"
    # The context is a tar on stdin (the Dockerfile, index/ and cache/); the result is exported
    # to a directory (one small file), so no image is left behind.
    tar -cf - -C "$seed" Dockerfile -C "$host_registry" index cache |
        DOCKER_BUILDKIT=1 "$docker_bk" build --quiet --network none --build-arg "SEED_RUN=$(date +%s%N)" \
            --output "type=local,dest=${seed}/out" - >/dev/null ||
        fail "seeding the cargo registry cache mount failed"
    log "cargo registry: the build's cache mount holds $(cat "${seed}/out/seeded") ($((SECONDS - started))s)"
fi
