#!/usr/bin/env bash
# Builds lattice and its static lifecycles from this checkout and starts a
# one-machine cluster (embedded store, local Docker). Extra arguments go to
# `lattice up`, e.g. --listen 127.0.0.1:9999.
set -euo pipefail
cd "$(dirname "$0")/.."
docker info >/dev/null 2>&1 || {
    echo "error: Docker is not reachable; start it (e.g. sudo systemctl start docker) and retry" >&2
    exit 1
}
cargo build --release --quiet -p lattice -p ltc
lifecycles=$(installers/build-lifecycles.sh target/release/lifecycles)
exec target/release/lattice up --lifecycle-dir "$lifecycles" "$@"
