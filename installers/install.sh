#!/usr/bin/env bash
# Installs lattice (the server bundle), ltc (the CLI) and the static lifecycle
# binaries from this checkout, optionally as a systemd service, and
# uninstalls exactly what it installed. Run with --help for the options.
set -euo pipefail

# The workspace's rust-version: the locked dependencies need it
# (uuid 1.29 asks for 1.89, the icu crates behind url for 1.88).
readonly MIN_RUST=1.89
# What `lattice up` needs in `lifecycles/` beside itself.
readonly LIFECYCLES=(lattice-init builder launcher healthcheck)
readonly UNIT_NAME=lattice.service

usage() {
    cat <<'EOF'
Usage: installers/install.sh [--prefix DIR] [--service] [--no-build] [--profile NAME]
       installers/install.sh [--prefix DIR] --uninstall

Builds and installs lattice and ltc from this checkout:
  PREFIX/bin/ltc, PREFIX/bin/lattice, PREFIX/bin/lifecycles/*
and records every file in PREFIX/share/lattice/install-manifest.

Options:
  --prefix DIR   where to install (default: ~/.local)
  --service      also install and start a systemd unit running
                 `PREFIX/bin/lattice up`: a system unit when run as root,
                 else a user unit in ~/.config/systemd/user/
  --no-build     install the binaries already built in the target dir
                 ($CARGO_TARGET_DIR, default: target/ of this checkout)
  --profile NAME cargo profile to build and install (default: release;
                 `dev` installs the debug build that `cargo test` made)
  --uninstall    stop and remove the unit if this installer made one, and
                 remove the files in the manifest; the data dir is kept
  -h, --help     show this help

Environment:
  CARGO_TARGET_DIR  cargo's target dir to build in and install from
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
usage_error() {
    printf 'error: %s\n' "$*" >&2
    printf 'Run %s --help for usage.\n' "$0" >&2
    exit 2
}

prefix="${HOME:?HOME is not set; pass --prefix}/.local"
service=0
uninstall=0
build=1
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
    --prefix)
        [ $# -ge 2 ] && [ -n "$2" ] || usage_error "--prefix needs a directory"
        prefix=$2
        shift 2
        ;;
    --prefix=*)
        prefix=${1#--prefix=}
        [ -n "$prefix" ] || usage_error "--prefix needs a directory"
        shift
        ;;
    --service) service=1 && shift ;;
    --uninstall) uninstall=1 && shift ;;
    --no-build) build=0 && shift ;;
    --profile)
        [ $# -ge 2 ] && [ -n "$2" ] || usage_error "--profile needs a cargo profile name"
        profile=$2
        shift 2
        ;;
    -h | --help) usage && exit 0 ;;
    *) usage_error "unknown argument: $1" ;;
    esac
done
if [ "$uninstall" = 1 ] && [ "$service" = 1 ]; then
    usage_error "--uninstall removes the service if one was installed; drop --service"
fi

# Absolute paths only: they go into the manifest and the unit file.
case "$prefix" in
/*) ;;
*) prefix="$PWD/$prefix" ;;
esac
prefix=${prefix%/}
[ -n "$prefix" ] || die "refusing to install into /; pass --prefix /usr/local or another directory"
case "$prefix" in
*$'\n'*) die "the prefix must not contain a newline" ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in
/*) ;;
*) target_dir="$PWD/$target_dir" ;;
esac

# cargo builds the `dev` profile into target/debug, any other into its name.
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug
built=$target_dir/$profile_dir

bin_dir=$prefix/bin
lifecycle_dest=$bin_dir/lifecycles
manifest_dir=$prefix/share/lattice
manifest=$manifest_dir/install-manifest

# ---------------------------------------------------------------- systemd

is_root() { [ "$(id -u)" = 0 ]; }

systemctl_scoped() {
    if is_root; then systemctl "$@"; else systemctl --user "$@"; fi
}

# Where the unit goes: a system unit for root, else a user unit.
unit_path() {
    if is_root; then
        printf '%s\n' "/etc/systemd/system/$UNIT_NAME"
    else
        printf '%s\n' "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/$UNIT_NAME"
    fi
}

# The optional file the unit reads `lattice up`'s settings from
# (LATTICE_LISTEN, LATTICE_USERNAME, ...). Never written by this script.
env_file_path() {
    if is_root; then
        printf '%s\n' /etc/lattice/lattice.env
    else
        printf '%s\n' "${XDG_CONFIG_HOME:-$HOME/.config}/lattice/lattice.env"
    fi
}

# Exits non-zero with the reason when systemd cannot run our unit here.
systemd_usable() {
    if ! command -v systemctl >/dev/null 2>&1; then
        echo "systemctl is not installed"
        return 1
    fi
    if [ ! -d /run/systemd/system ]; then
        echo "systemd is not running as the init system here (no /run/systemd/system; containers and CI machines usually have none)"
        return 1
    fi
    if ! is_root && ! systemctl --user show-environment >/dev/null 2>&1; then
        echo "there is no systemd user manager for $(id -un) (log in through a session, or run as root for a system unit)"
        return 1
    fi
}

# The default data dir of `lattice up` for the user the service runs as.
service_data_dir() {
    local home
    if is_root; then
        home=$(getent passwd root 2>/dev/null | cut -d: -f6)
        printf '%s\n' "${home:-/root}/.local/share/lattice"
    else
        printf '%s\n' "$HOME/.local/share/lattice"
    fi
}

# systemd unescapes `%` specifiers and splits on whitespace unless quoted.
systemd_quote() {
    local s=${1//%/%%}
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

write_unit() {
    local path=$1 exec_path env_file
    exec_path=$(systemd_quote "$bin_dir/lattice")
    env_file=$(env_file_path)
    {
        echo "# Installed by lattice's installers/install.sh; removed by its --uninstall."
        echo "[Unit]"
        echo "Description=lattice one-machine cluster (store, receptor API, router, cell)"
        if is_root; then
            echo "Wants=network-online.target docker.service"
            echo "After=network-online.target docker.service"
        fi
        echo
        echo "[Service]"
        echo "Type=simple"
        echo "# Settings such as LATTICE_LISTEN, LATTICE_ROUTER_LISTEN, LATTICE_USERNAME,"
        echo "# LATTICE_PASSWORD, LATTICE_DATA_DIR and LATTICE_DOMAIN (see \`lattice up --help\`)."
        echo "EnvironmentFile=-${env_file//%/%%}"
        echo "ExecStart=$exec_path up"
        echo "Restart=on-failure"
        echo "RestartSec=5"
        echo "# lattice drains for up to 10 s on SIGTERM."
        echo "TimeoutStopSec=30"
        echo
        echo "[Install]"
        if is_root; then
            echo "WantedBy=multi-user.target"
        else
            echo "WantedBy=default.target"
        fi
    } >"$path.tmp"
    mv -f "$path.tmp" "$path"
}

# ---------------------------------------------------------------- manifest

# Manifest lines: an absolute path of a file the installer wrote, or of a
# directory it created (ending in `/`, removed only when empty). Lines
# starting with `#` are comments.
installed=()

record() { installed+=("$1"); }

# Creates DIR and its missing parents, recording the ones it made.
make_dir() {
    local dir=$1 missing=()
    while [ ! -d "$dir" ]; do
        missing=("$dir" "${missing[@]}")
        dir=$(dirname "$dir")
    done
    local d
    for d in "${missing[@]}"; do
        mkdir "$d" || die "cannot create $d"
        record "$d/"
    done
}

# Copies FROM to TO (mode MODE) through a temporary file and a rename, so a
# running binary is replaced, not overwritten.
install_file() {
    local from=$1 to=$2 mode=$3
    make_dir "$(dirname "$to")"
    cp "$from" "$to.tmp.$$" || die "cannot write $to.tmp.$$"
    chmod "$mode" "$to.tmp.$$"
    mv -f "$to.tmp.$$" "$to" || die "cannot write $to"
    record "$to"
}

# Writes the manifest: the previous one's entries (an install over an
# install), then this run's, without duplicates.
write_manifest() {
    make_dir "$manifest_dir"
    local tmp=$manifest.tmp.$$
    {
        echo "# lattice install manifest: files (and created directories, ending in /)"
        echo "# that installers/install.sh put here; its --uninstall removes them."
        {
            [ -f "$manifest" ] && grep -v '^#' "$manifest" || true
            printf '%s\n' "${installed[@]}"
        } | awk 'NF && !seen[$0]++'
    } >"$tmp"
    mv -f "$tmp" "$manifest"
}

# ---------------------------------------------------------------- uninstall

do_uninstall() {
    if [ ! -f "$manifest" ]; then
        die "no install manifest at $manifest: nothing was installed into $prefix (pass the same --prefix as when installing)"
    fi
    say "uninstalling what $manifest lists"
    local entries=() line
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
        '' | '#'*) continue ;;
        /*) ;;
        *) die "manifest line is not an absolute path: $line" ;;
        esac
        case "/$line/" in
        */../* | */./*) die "manifest line is not a plain path: $line" ;;
        esac
        entries+=("$line")
    done <"$manifest"

    # The unit first, so lattice stops before its binary goes.
    local entry
    for entry in "${entries[@]}"; do
        case "$entry" in
        */systemd/system/$UNIT_NAME | */systemd/user/$UNIT_NAME)
            if reason=$(systemd_usable); then
                say "stopping and disabling $UNIT_NAME"
                systemctl_scoped disable --now "$UNIT_NAME" >/dev/null 2>&1 ||
                    warn "could not stop $UNIT_NAME; see: systemctl$(is_root || echo ' --user') status $UNIT_NAME"
            else
                warn "cannot stop $UNIT_NAME: $reason"
            fi
            ;;
        esac
    done

    local removed=0 kept_dirs=()
    for entry in "${entries[@]}"; do
        case "$entry" in
        */) continue ;;
        esac
        if [ -e "$entry" ] || [ -L "$entry" ]; then
            if [ -d "$entry" ] && [ ! -L "$entry" ]; then
                warn "not removing $entry: it is a directory now"
                continue
            fi
            rm -f -- "$entry"
            removed=$((removed + 1))
        fi
    done
    rm -f -- "$manifest"

    # Directories the installer created, deepest first, only when empty.
    local dirs=()
    for entry in "${entries[@]}"; do
        case "$entry" in
        */) dirs+=("${entry%/}") ;;
        esac
    done
    if [ ${#dirs[@]} -gt 0 ]; then
        while IFS= read -r entry; do
            [ -d "$entry" ] || continue
            rmdir -- "$entry" 2>/dev/null || kept_dirs+=("$entry")
        done < <(printf '%s\n' "${dirs[@]}" | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-)
    fi

    for entry in "${entries[@]}"; do
        case "$entry" in
        */systemd/system/$UNIT_NAME | */systemd/user/$UNIT_NAME)
            systemd_usable >/dev/null 2>&1 && systemctl_scoped daemon-reload >/dev/null 2>&1 || true
            ;;
        esac
    done

    say "removed $removed file(s) and the manifest"
    local d
    for d in "${kept_dirs[@]}"; do
        say "kept $d: it holds files the installer did not put there"
    done
    say "the cluster's data was not touched: it is in the data dir, by default $(service_data_dir)"
    say "  (or --data-dir / LATTICE_DATA_DIR if you set one); remove it yourself if you no longer need it"
    local env_file
    env_file=$(env_file_path)
    [ -f "$env_file" ] && say "kept your settings file $env_file"
    return 0
}

# ---------------------------------------------------------------- install

version_at_least() {
    # version_at_least HAVE NEED: both as MAJOR.MINOR[.PATCH]
    local have=$1 need=$2
    [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" = "$need" ]
}

check_toolchain() {
    command -v cargo >/dev/null 2>&1 && command -v rustc >/dev/null 2>&1 ||
        die "cargo and rustc are needed to build (Rust >= $MIN_RUST): install them from your distribution (e.g. sudo apt-get install cargo rustc) or with rustup"
    local have
    have=$(rustc --version | awk '{print $2}')
    have=${have%%-*}
    version_at_least "$have" "$MIN_RUST" ||
        die "Rust $have is too old: lattice's locked dependencies need Rust >= $MIN_RUST (install a newer toolchain, e.g. with rustup, or pass --no-build with binaries built elsewhere)"
}

build_all() {
    check_toolchain
    say "building lattice and ltc (profile $profile; this takes a few minutes) in $target_dir"
    (cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo build --profile "$profile" -p lattice -p ltc) ||
        die "cargo build failed (see above)"
    say "building the static lifecycle binaries"
    (cd "$repo" && CARGO_TARGET_DIR=$target_dir installers/build-lifecycles.sh "$built/lifecycles" >/dev/null) ||
        die "installers/build-lifecycles.sh failed (see above)"
}

# The directory holding the built lifecycles: what build_all made or the
# one the test harness builds (server/testkit), whichever is newer.
find_lifecycles() {
    local dir name ok best=
    for dir in "$built/lifecycles" "$target_dir/lifecycles-static/lifecycles"; do
        ok=1
        for name in "${LIFECYCLES[@]}"; do
            [ -f "$dir/$name" ] || ok=0
        done
        # Both may exist: the newer build wins, so a stale copy left by an
        # older build never shadows the one just made.
        if [ "$ok" = 1 ] && { [ -z "$best" ] || [ "$dir/lattice-init" -nt "$best/lattice-init" ]; }; then
            best=$dir
        fi
    done
    [ -n "$best" ] || return 1
    printf '%s\n' "$best"
}

check_docker() {
    if ! command -v docker >/dev/null 2>&1; then
        warn "the docker command is not installed; lattice's cell runs containers with Docker."
        warn "  install it (e.g. sudo apt-get install docker.io) and start it (sudo systemctl start docker)"
        return 0
    fi
    local out
    if out=$(docker info 2>&1 >/dev/null); then
        say "Docker is reachable"
        return 0
    fi
    warn "Docker is not reachable: $(printf '%s\n' "$out" | grep -v '^$' | head -n1)"
    if printf '%s' "$out" | grep -qi 'permission denied'; then
        warn "  add yourself to the docker group and log in again:"
        warn "    sudo usermod -aG docker $(id -un)"
    else
        warn "  start the engine: sudo systemctl start docker   (or: sudo service docker start)"
        is_root || warn "  if it runs but you may not use it: sudo usermod -aG docker $(id -un), then log in again"
    fi
    warn "  installing anyway; \`lattice up\` needs Docker for its cell (or run it with --no-cell)"
}

install_service() {
    local unit
    unit=$(unit_path)
    say "installing the systemd unit $unit"
    make_dir "$(dirname "$unit")"
    write_unit "$unit"
    record "$unit"
    write_manifest
    systemctl_scoped daemon-reload || die "systemctl daemon-reload failed"
    systemctl_scoped enable "$UNIT_NAME" >/dev/null || die "cannot enable $UNIT_NAME"
    # restart, not start: an install over an install runs the new binary.
    systemctl_scoped restart "$UNIT_NAME" || die "cannot start $UNIT_NAME; see: journalctl$(is_root || echo ' --user') -u $UNIT_NAME"
    sleep 2
    local scope
    scope=$(is_root || echo ' --user')
    if systemctl_scoped is-active --quiet "$UNIT_NAME"; then
        say "$UNIT_NAME is running; logs: journalctl$scope -u $UNIT_NAME -f"
    else
        die "$UNIT_NAME did not stay up; see: journalctl$scope -u $UNIT_NAME"
    fi
    say "its settings (listen addresses, credentials, data dir) go in $(env_file_path), e.g."
    say "  LATTICE_LISTEN=0.0.0.0:8888  LATTICE_USERNAME=...  LATTICE_PASSWORD=...   (one per line)"
    say "  then: systemctl$scope restart $UNIT_NAME"
    if ! is_root; then
        say "user units stop when you log out; to keep lattice running: sudo loginctl enable-linger $(id -un)"
    fi
}

do_install() {
    if [ "$service" = 1 ]; then
        local reason
        reason=$(systemd_usable) ||
            die "--service needs systemd: $reason. Install without --service and run $bin_dir/lattice up yourself."
    fi

    if [ "$build" = 1 ]; then
        build_all
    else
        say "--no-build: installing what is built in $target_dir"
    fi
    local name
    for name in lattice ltc; do
        [ -x "$built/$name" ] ||
            die "$built/$name is not built; run without --no-build, or set CARGO_TARGET_DIR to where it was built"
    done
    local lifecycle_src
    lifecycle_src=$(find_lifecycles) ||
        die "the static lifecycles (${LIFECYCLES[*]}) are not built in $built/lifecycles; run without --no-build, or installers/build-lifecycles.sh $built/lifecycles"

    say "installing into $prefix"
    install_file "$built/lattice" "$bin_dir/lattice" 0755
    # ltc beside lattice: the receptor serves this copy on
    # /v1/sync/{arch}/ltc, which `ltc sync` downloads.
    install_file "$built/ltc" "$bin_dir/ltc" 0755
    local f
    for f in "$lifecycle_src"/* "$lifecycle_src"/samples/*; do
        [ -f "$f" ] || continue
        case "$f" in
        "$lifecycle_src"/samples/*) install_file "$f" "$lifecycle_dest/samples/$(basename "$f")" 0755 ;;
        *) install_file "$f" "$lifecycle_dest/$(basename "$f")" 0755 ;;
        esac
    done
    write_manifest
    say "installed $bin_dir/lattice, $bin_dir/ltc and $lifecycle_dest/; manifest: $manifest"

    check_docker

    if [ "$service" = 1 ]; then
        install_service
    fi

    case ":$PATH:" in
    *":$bin_dir:"*) ;;
    *)
        say "$bin_dir is not in your PATH; add it, e.g. to ~/.profile:"
        say "  export PATH=\"$bin_dir:\$PATH\""
        ;;
    esac
    if [ "$service" = 0 ]; then
        say "start a one-machine cluster with: $bin_dir/lattice up"
    fi
    say "then: ltc target 127.0.0.1:8888 && ltc version"
    say "uninstall with: $(printf %q "$repo/installers/install.sh") --prefix $(printf %q "$prefix") --uninstall"
}

if [ "$uninstall" = 1 ]; then
    do_uninstall
else
    do_install
fi
