#!/usr/bin/env bash
# Builds the lifecycle binaries (placed into containers) as static
# executables, so they run in any image, even one without a libc, and the
# built-in sample app into OUT_DIR/samples/ (the cell makes it a local image).
# Usage: installers/build-lifecycles.sh [OUT_DIR]   (default: target/lifecycles)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/lifecycles}
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-target}/lifecycles-static
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
    -p lattice-lifecycles --target "$triple" --target-dir "$target_dir"
samples="lattice-app"
mkdir -p "$out/samples"
for bin in "$target_dir/$triple"/release/*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    name=$(basename "$bin")
    case " $samples " in
        *" $name "*) cp "$bin" "$out/samples/" ;;
        *) cp "$bin" "$out/" ;;
    esac
done
echo "$out"
