#!/usr/bin/env bash
# CI check "install on a fresh machine": installs lattice and ltc with
# installers/install.sh into a temporary prefix, runs the INSTALLED
# `lattice up` (which must find its lifecycles beside itself) on free ports,
# drives it with the installed `ltc`, stops it, uninstalls, and checks that
# the prefix holds nothing the installer put there.
#
# Usage: installers/test-install.sh [--build | --profile dev]
#   Installs with --no-build when lattice, ltc and the lifecycles are already
#   built in $CARGO_TARGET_DIR (default: target/ of this checkout), else
#   builds; --build always builds. --profile dev installs the debug build
#   that `cargo test --workspace` has just made (installers/test.sh), so the
#   install test costs no build of its own.
# Needs curl; Docker for the cell (without it the cell is left out).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in
/*) ;;
*) target_dir="$PWD/$target_dir" ;;
esac
export CARGO_TARGET_DIR=$target_dir

force_build=0
profile=release
case "${1:-}" in
'') ;;
--build) force_build=1 ;;
--profile) profile=${2:?--profile needs a cargo profile name} ;;
-h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
*) echo "usage: $0 [--build | --profile dev]" >&2 && exit 2 ;;
esac
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug

CHECKS_NAME="install test"
# shellcheck source=installers/checks.sh
. "$repo/installers/checks.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-install-test.XXXXXX")
prefix=$tmp/prefix
lattice_pid=
installed=0

cleanup() {
    local status=$?
    if [ -n "$lattice_pid" ] && kill -0 "$lattice_pid" 2>/dev/null; then
        kill -TERM "$lattice_pid" 2>/dev/null || true
        for _ in $(seq 1 30); do
            kill -0 "$lattice_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$lattice_pid" 2>/dev/null || true
        wait "$lattice_pid" 2>/dev/null || true
    fi
    if [ "$installed" = 1 ]; then
        "$repo/installers/install.sh" --prefix "$prefix" --uninstall >/dev/null 2>&1 || true
    fi
    rm -rf -- "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v curl >/dev/null 2>&1 || abort "curl is needed (apt-get install curl)"

# PATH as on a fresh machine: without the prefix.
export PATH
installer=$repo/installers/install.sh

# ---------------------------------------------------------------- --help
if "$installer" --help >"$tmp/help.out" 2>&1 && grep -q -- '--uninstall' "$tmp/help.out"; then
    pass "install.sh --help exits 0 and documents the options"
else
    fail "install.sh --help"
fi

# ---------------------------------------------------------------- install
build_flag=--no-build
if [ "$force_build" = 1 ]; then
    build_flag=
elif ! { [ -x "$target_dir/$profile_dir/lattice" ] && [ -x "$target_dir/$profile_dir/ltc" ] &&
    { [ -f "$target_dir/$profile_dir/lifecycles/lattice-init" ] ||
        [ -f "$target_dir/lifecycles-static/lifecycles/lattice-init" ]; }; }; then
    build_flag=
fi
if [ -n "$build_flag" ]; then
    note "installing the binaries already built in $target_dir (--no-build)"
else
    note "building and installing (profile $profile; minutes)"
fi

# Something of the user's in the prefix, which the uninstall must keep.
mkdir -p "$prefix/bin"
echo "not lattice's" >"$prefix/bin/users-own-tool"
(cd "$prefix" && find . | sort) >"$tmp/before"

# shellcheck disable=SC2086 # build_flag is empty or one word
if "$installer" --prefix "$prefix" --profile "$profile" $build_flag >"$tmp/install.out" 2>&1; then
    installed=1
    pass "install.sh --prefix TMP exits 0"
else
    installed=1
    cat "$tmp/install.out" >&2
    abort "install.sh --prefix $prefix failed"
fi
manifest=$prefix/share/lattice/install-manifest
cp "$manifest" "$tmp/manifest" 2>/dev/null || abort "no manifest at $manifest"

all_present=1
for f in bin/lattice bin/ltc bin/lifecycles/lattice-init bin/lifecycles/builder \
    bin/lifecycles/launcher bin/lifecycles/healthcheck; do
    if [ ! -x "$prefix/$f" ]; then
        all_present=0
        fail "installed $f is missing or not executable"
    fi
done
[ "$all_present" = 1 ] && pass "ltc, lattice and lifecycles/* installed in PREFIX/bin"

manifest_ok=1
while IFS= read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    if [ ! -e "$line" ]; then
        manifest_ok=0
        fail "manifest lists $line, which does not exist"
    fi
    case "$line" in
    "$prefix"/*) ;;
    *)
        manifest_ok=0
        fail "manifest lists $line, outside the prefix"
        ;;
    esac
done <"$tmp/manifest"
for f in "$prefix/bin/lattice" "$prefix/bin/ltc" "$prefix/bin/lifecycles/lattice-init"; do
    grep -qxF "$f" "$tmp/manifest" || {
        manifest_ok=0
        fail "manifest does not list $f"
    }
done
[ "$manifest_ok" = 1 ] && pass "the manifest lists exactly existing installed paths"

check "install.sh tells to add PREFIX/bin to PATH" \
    grep -qF "export PATH=\"$prefix/bin:" "$tmp/install.out"

# ---------------------------------------------------------------- --service without systemd
if [ ! -d /run/systemd/system ]; then
    if "$installer" --prefix "$tmp/service-prefix" --service --no-build >"$tmp/service.out" 2>&1; then
        fail "install.sh --service succeeded without systemd"
    elif grep -q 'needs systemd' "$tmp/service.out" && [ ! -e "$tmp/service-prefix" ]; then
        pass "install.sh --service without systemd fails clearly and installs nothing"
    else
        cat "$tmp/service.out" >&2
        fail "install.sh --service without systemd: unclear error or partial install"
    fi
else
    note "systemd runs here: not checking the --service refusal (and not installing a unit)"
fi

# ---------------------------------------------------------------- run the installed lattice
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null && return
    # Without python3: a random high port nobody answers on.
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
            echo "$p"
            return
        }
    done
}
api_port=$(free_port)
router_port=$(free_port)
while [ "$router_port" = "$api_port" ]; do router_port=$(free_port); done
cell_id="install-test-$$-$RANDOM"
api="http://127.0.0.1:$api_port"
mkdir -p "$tmp/home" "$tmp/data" "$tmp/ltc-config"

cell_args=(--cell-id "$cell_id")
with_cell=1
if ! docker info >/dev/null 2>&1; then
    with_cell=0
    cell_args=(--no-cell)
    note "Docker is not reachable: running lattice with --no-cell (the cell is not checked)"
fi

# HOME points at an empty directory: nothing may be written there.
HOME=$tmp/home "$prefix/bin/lattice" up \
    --listen "127.0.0.1:$api_port" --router-listen "127.0.0.1:$router_port" \
    --data-dir "$tmp/data" "${cell_args[@]}" >"$tmp/lattice.log" 2>&1 &
lattice_pid=$!

up=0
for _ in $(seq 1 180); do
    if curl -fsS "$api/v1/info" >"$tmp/info.json" 2>/dev/null; then
        up=1
        break
    fi
    kill -0 "$lattice_pid" 2>/dev/null || break
    sleep 0.5
done
if [ "$up" = 1 ]; then
    pass "installed lattice up answers GET /v1/info on $api"
else
    tail -n 40 "$tmp/lattice.log" >&2
    if ! kill -0 "$lattice_pid" 2>/dev/null; then
        status=0
        wait "$lattice_pid" || status=$?
        lattice_pid=
        abort "installed lattice up exited with status $status before answering GET $api/v1/info (its log is above)"
    fi
    abort "installed lattice up did not answer GET $api/v1/info within 90 s (its log is above)"
fi

ltc() {
    HOME=$tmp/home LTC_TARGET=$api LTC_CONFIG_DIR=$tmp/ltc-config "$prefix/bin/ltc" "$@"
}

if ltc version >"$tmp/version.out" 2>&1 && grep -q '^ltc version ' "$tmp/version.out" &&
    grep -q "^receptor version .* at $api" "$tmp/version.out"; then
    pass "installed ltc version reaches the receptor"
else
    cat "$tmp/version.out" >&2
    fail "installed ltc version"
fi

if [ "$with_cell" = 1 ]; then
    # The cell registers during startup; give its presence a moment.
    seen=0
    for _ in $(seq 1 30); do
        if ltc cells >"$tmp/cells.out" 2>&1 && grep -qF "$cell_id" "$tmp/cells.out"; then
            seen=1
            break
        fi
        sleep 1
    done
    if [ "$seen" = 1 ]; then
        pass "installed ltc cells lists the cell (it found its lifecycles beside lattice)"
    else
        cat "$tmp/cells.out" >&2
        tail -n 20 "$tmp/lattice.log" >&2
        fail "installed ltc cells does not list $cell_id"
    fi
else
    check "installed ltc cells exits 0" ltc cells
fi

if ltc test --help >/dev/null 2>&1; then
    if ltc test >"$tmp/ltc-test.out" 2>&1; then
        pass "installed ltc test"
    else
        tail -n 40 "$tmp/ltc-test.out" >&2
        fail "installed ltc test"
    fi
else
    note "ltc has no \`test\` command yet: skipping ltc test"
fi

# ---------------------------------------------------------------- stop
kill -TERM "$lattice_pid"
stopped=0
for _ in $(seq 1 60); do
    if ! kill -0 "$lattice_pid" 2>/dev/null; then
        stopped=1
        break
    fi
    sleep 0.5
done
if [ "$stopped" = 1 ]; then
    status=0
    wait "$lattice_pid" || status=$?
    lattice_pid=
    if [ "$status" = 0 ]; then
        pass "lattice stops on SIGTERM with exit 0"
    else
        tail -n 20 "$tmp/lattice.log" >&2
        fail "lattice exited $status on SIGTERM, not 0"
    fi
else
    fail "lattice did not stop within 30 s of SIGTERM"
fi

leftovers=$(cd "$tmp/home" && find . -mindepth 1 | head -n 5)
if [ -z "$leftovers" ]; then
    pass "lattice and ltc wrote nothing to HOME (data dir and config dir were given)"
else
    fail "lattice or ltc wrote to HOME: $leftovers"
fi

# ---------------------------------------------------------------- uninstall
if "$installer" --prefix "$prefix" --uninstall >"$tmp/uninstall.out" 2>&1; then
    installed=0
    pass "install.sh --uninstall exits 0"
else
    cat "$tmp/uninstall.out" >&2
    abort "install.sh --uninstall failed"
fi
check "uninstall names the data dir it kept" grep -q 'data dir' "$tmp/uninstall.out"

still=()
while IFS= read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    [ -e "$line" ] && still+=("$line")
done <"$tmp/manifest"
[ -e "$manifest" ] && still+=("$manifest")
if [ ${#still[@]} = 0 ]; then
    pass "uninstall removed every path in the manifest and the manifest"
else
    fail "uninstall left: ${still[*]}"
fi

(cd "$prefix" && find . | sort) >"$tmp/after"
if diff -u "$tmp/before" "$tmp/after" >"$tmp/prefix.diff"; then
    pass "the prefix is as before the install (the user's own file kept)"
else
    cat "$tmp/prefix.diff" >&2
    fail "the prefix differs from before the install"
fi
check "uninstall left the data dir alone" test -d "$tmp/data"

summary
[ "$failed" = 0 ]
