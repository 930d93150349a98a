#!/usr/bin/env bash
# Builds the lifecycle binaries (placed into containers) as static
# executables, so they run in any image, even one without a libc.
# Usage: installers/build-lifecycles.sh [OUT_DIR]   (default: target/lifecycles)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/lifecycles}
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet \
    -p lattice-lifecycles --target "$triple" --target-dir target/lifecycles-static
mkdir -p "$out"
for bin in target/lifecycles-static/"$triple"/release/*; do
    [ -f "$bin" ] && [ -x "$bin" ] && cp "$bin" "$out/"
done
echo "$out"
