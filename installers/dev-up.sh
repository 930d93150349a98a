#!/usr/bin/env bash
# Builds lattice, ltc and the static lifecycles from this checkout and starts
# a one-machine cluster (embedded store, local Docker) in the foreground;
# Ctrl-C stops it. Extra arguments go to `lattice up`, e.g.
# --listen 127.0.0.1:9999.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*" >&2; }
docker info >/dev/null 2>&1 || {
    echo "error: Docker is not reachable; start it (e.g. sudo systemctl start docker) and retry" >&2
    exit 1
}
command -v cc >/dev/null 2>&1 || {
    echo "error: no C compiler: some crates build C code; install one (sudo apt-get install build-essential)" >&2
    exit 1
}
# cargo only rebuilds what changed; the first build takes minutes.
say "building lattice and ltc (release) in ${CARGO_TARGET_DIR:-target}: the server and the CLI"
cargo build --release -p lattice -p ltc
say "building the lifecycles (static binaries placed into every container) and the sample app"
target_dir=${CARGO_TARGET_DIR:-target}
lifecycles=$(installers/build-lifecycles.sh "$target_dir/release/lifecycles")
say "starting lattice up (Ctrl-C stops it and its apps' containers; desired apps come back on the next start)"
exec "$target_dir/release/lattice" up --lifecycle-dir "$lifecycles" "$@"
