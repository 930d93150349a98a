#!/usr/bin/env bash
# The README's test command: checks (and where it can, installs) what the
# tests need, then runs every test of this checkout.
#
# Usage: installers/test.sh [--fast] [-- CARGO_TEST_ARGS...]
#   (no flag)  everything: `cargo test --workspace` (real Docker, a throwaway
#              PostgreSQL), then the install test and the containerised
#              cluster test (installers/test-install.sh, test-cluster.sh)
#   --fast     the tests that need neither Docker nor PostgreSQL: every
#              crate's unit, property and simulation tests
#              (`cargo test --workspace --lib --bins`) and the cluster
#              behaviour tests on the in-process cluster (`cargo test -p
#              lattice-testkit --test cluster`); no set-up but Rust
#   arguments after `--` go to `cargo test` (e.g. `-- -p lattice-models`)
#
# Needs Linux, Rust >= 1.89 (rustup), and for the full run a reachable Docker
# engine. As root it installs the missing Debian packages (build-essential,
# busybox-static, postgresql, curl, docker-compose, chromium,
# chromium-driver) itself; otherwise it names the `sudo apt-get install`
# line to run and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly MIN_RUST=1.89
fast=0
cargo_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --fast) fast=1 ;;
    --) shift && cargo_args=("$@") && break ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
    *) echo "usage: $0 [--fast] [-- CARGO_TEST_ARGS...]" >&2 && exit 2 ;;
    esac
    shift
done

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

version_at_least() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# ------------------------------------------------------------ Rust
command -v cargo >/dev/null 2>&1 && command -v rustc >/dev/null 2>&1 ||
    die "Rust is not installed: install it with rustup (https://rustup.rs), Rust >= $MIN_RUST; Debian's own rustc is too old"
have=$(rustc --version | awk '{print $2}')
version_at_least "${have%%-*}" "$MIN_RUST" ||
    die "Rust $have is too old: the locked dependencies need Rust >= $MIN_RUST (rustup update stable)"

# ------------------------------------------------------------ packages
# Each entry: a check that passes when present, and the Debian package.
missing=()
need() {
    local package=$1
    shift
    "$@" >/dev/null 2>&1 || missing+=("$package")
}
need build-essential command -v cc
if [ "$fast" = 0 ]; then
    # Test images are built from Debian's static busybox: nothing is pulled.
    need busybox-static test -x /bin/busybox
    # The store suite and PostgreSQL cluster tests start a throwaway server.
    need postgresql sh -c 'ls /usr/lib/postgresql/*/bin/initdb'
    need curl command -v curl
    # installers/test-cluster.sh runs its containers with Compose.
    need docker-compose sh -c 'docker compose version || command -v docker-compose'
    # The dashboard's end-to-end test drives a real headless browser.
    need chromium command -v chromium
    need chromium-driver command -v chromedriver
    # `ltc ssh`'s tests log in with a real OpenSSH client, its password
    # given by sshpass.
    need openssh-client command -v ssh
    need sshpass command -v sshpass
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        die "missing: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}"
    fi
fi

if [ "$fast" = 1 ]; then
    say "unit, property and simulation tests (no Docker, no PostgreSQL)"
    cargo test --workspace --lib --bins "${cargo_args[@]}"
    say "cluster behaviour on the in-process cluster (brain and reps on the fake Garden)"
    exec cargo test -p lattice-testkit --test cluster "${cargo_args[@]}"
fi

# ------------------------------------------------------------ Docker
docker info >/dev/null 2>&1 ||
    die "Docker is not reachable: start the engine (sudo systemctl start docker) and make sure you may use it (sudo usermod -aG docker \$USER, then log in again); or run installers/test.sh --fast for the tests that need no Docker"

say "all tests: cargo test --workspace (real Docker, throwaway PostgreSQL)"
cargo test --workspace "${cargo_args[@]}"

say "install on this machine, run the installed cluster and ltc, uninstall"
installers/test-install.sh --profile dev

say "a cluster of separate containers: PostgreSQL, 2 brains, 3 cells, a router"
installers/test-cluster.sh
