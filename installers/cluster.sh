#!/usr/bin/env bash
# Runs a lattice cluster of separate "machines" as containers on this
# machine's Docker engine: PostgreSQL, 2 brains, 3 cells (zones z1, z2) and
# a router on a private network (installers/cluster/compose.yaml). Images are
# built from scratch with the static binaries of this checkout and the
# PostgreSQL binaries installed here: nothing is pulled.
#
# Usage: installers/cluster.sh COMMAND
#   build    build the static binaries and the images lattice/server:local
#            and lattice/postgres:local
#   up       build, start the cluster, wait until 3 cells have joined
#   down     stop the cluster (cells drain their instances), remove its
#            containers, network and any instance left behind
#   status   the cluster's containers
#   logs     the cluster's logs (extra arguments go to `compose logs`)
#
# Settings (environment): LATTICE_CLUSTER_API_PORT (9888, brain-1's API on
# 127.0.0.1), LATTICE_CLUSTER_API_PORT_2 (9889, brain-2's),
# LATTICE_CLUSTER_ROUTER_PORT (9080), LATTICE_CLUSTER_SUBNET
# (172.31.213.0/24) with LATTICE_CLUSTER_GATEWAY (172.31.213.1, its first
# address), LATTICE_CLUSTER_DOMAIN (localhost). The cluster secret and the
# database password are made once and kept in
# ${XDG_DATA_HOME:-~/.local/share}/lattice-cluster.
# Needs Docker with Compose (`docker compose` or `docker-compose`), Rust,
# PostgreSQL's server binaries (Debian: postgresql) and busybox-static.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
compose_file=$repo/installers/cluster/compose.yaml
project=lattice-cluster
cells=(cluster-cell-1 cluster-cell-2 cluster-cell-3)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in
/*) ;;
*) target_dir="$PWD/$target_dir" ;;
esac
state_dir=${XDG_DATA_HOME:-$HOME/.local/share}/lattice-cluster
api_port=${LATTICE_CLUSTER_API_PORT:-9888}

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$project" -f "$compose_file" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose -p "$project" -f "$compose_file" "$@"
    else
        die "Docker Compose is not installed (Debian: sudo apt-get install docker-compose)"
    fi
}

need_docker() {
    docker info >/dev/null 2>&1 ||
        die "Docker is not reachable; start it (e.g. sudo systemctl start docker) and retry"
}

# A random hex string of 2*N characters.
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# Exports the cluster secret and database password, made on first use.
load_secrets() {
    mkdir -p "$state_dir"
    chmod 700 "$state_dir"
    local name file
    for name in secret db-password; do
        file=$state_dir/$name
        if [ ! -s "$file" ]; then
            (umask 077 && random_hex 32 >"$file")
        fi
    done
    LATTICE_SECRET=$(cat "$state_dir/secret")
    LATTICE_DB_PASSWORD=$(cat "$state_dir/db-password")
    export LATTICE_SECRET LATTICE_DB_PASSWORD
}

# Copies absolute paths into the image root $root, keeping their paths and
# following symlinks.
copy_into() {
    local path
    for path in "$@"; do
        mkdir -p "$root$(dirname "$path")"
        cp -L "$path" "$root$path"
    done
}

# Whether an ELF file loads shared libraries (ldd's wording and exit status
# for a static one differ between versions).
is_dynamic() { ldd "$1" 2>/dev/null | grep -q '=>'; }

# The shared libraries (and loader) the given ELF files load.
libraries_of() {
    ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u
}

# docker_build TAG CONTEXT: builds quietly, printing the builder's output
# only when it fails. The build TAG named before is removed once untagged
# (each new lattice binary would leave one behind); the engine keeps it
# while a container uses it.
docker_build() {
    local output previous
    previous=$(docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true)
    if ! output=$(docker build -t "$1" "$2" 2>&1); then
        printf '%s\n' "$output" >&2
        die "building image $1 failed (see above)"
    fi
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$1")" ]; then
        docker image rm "$previous" >/dev/null 2>&1 || true
    fi
}

build_server_image() {
    local triple binary context
    triple=$(rustc -vV | sed -n 's/^host: //p')
    say "building the static lattice binary (release; a few minutes the first time)"
    (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet \
        -p lattice --target "$triple" --target-dir "$target_dir/server-static") ||
        die "cargo build failed (see above)"
    binary=$target_dir/server-static/$triple/release/lattice
    if is_dynamic "$binary"; then
        die "$binary is not static; it would not run in an image from scratch"
    fi
    context=$(mktemp -d "${TMPDIR:-/tmp}/lattice-image.XXXXXX")
    root=$context/rootfs
    mkdir -p "$root/data" "$root/tmp"
    chmod 1777 "$root/tmp"
    cp "$binary" "$root/lattice"
    say "building the static lifecycles"
    (cd "$repo" && CARGO_TARGET_DIR=$target_dir installers/build-lifecycles.sh "$root/lifecycles" >/dev/null) ||
        die "building the lifecycles failed (see above)"
    cat >"$context/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV LATTICE_DATA_DIR=/data LATTICE_LIFECYCLE_DIR=/lifecycles
LABEL io.lattice.image=server
ENTRYPOINT ["/lattice"]
EOF
    say "building image lattice/server:local"
    docker_build lattice/server:local "$context"
    rm -rf -- "$context"
}

build_postgres_image() {
    local bin_dir pg_root version share busybox context app
    bin_dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$bin_dir" ] && [ -x "$bin_dir/postgres" ] ||
        die "PostgreSQL's server binaries are not installed (Debian: sudo apt-get install postgresql)"
    busybox=$(command -v busybox || true)
    [ -n "$busybox" ] && ! is_dynamic "$busybox" ||
        die "a static busybox is needed for the PostgreSQL image (Debian: sudo apt-get install busybox-static)"
    pg_root=${bin_dir%/bin}
    version=$(basename "$pg_root")
    share=/usr/share/postgresql/$version
    context=$(mktemp -d "${TMPDIR:-/tmp}/lattice-image.XXXXXX")
    root=$context/rootfs
    mkdir -p "$context/home" "$root/tmp" "$root/etc" "$root/bin"
    chmod 1777 "$root/tmp"
    copy_into "$bin_dir/postgres" "$bin_dir/initdb"
    # Every server module but the JIT, which would bring all of LLVM.
    local modules=()
    for module in "$pg_root"/lib/*.so; do
        case $module in */llvmjit*) ;; *) modules+=("$module") ;; esac
    done
    copy_into "${modules[@]}"
    mapfile -t libraries < <(libraries_of "$bin_dir/postgres" "$bin_dir/initdb" "${modules[@]}")
    copy_into "${libraries[@]}"
    mkdir -p "$root$(dirname "$share")"
    cp -rL "$share" "$root$share"
    copy_into /usr/share/zoneinfo/UTC
    # initdb runs the bootstrap server through /bin/sh.
    cp "$busybox" "$root/bin/busybox"
    for app in sh mktemp rm cat; do ln -s busybox "$root/bin/$app"; done
    echo "postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh" >"$root/etc/passwd"
    echo "postgres:x:999:" >"$root/etc/group"
    mkdir -p "$root/usr/local/bin"
    install -m 755 "$repo/installers/cluster/postgres-entrypoint.sh" \
        "$root/usr/local/bin/lattice-postgres-entrypoint"
    cat >"$context/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=999:999 home/ /var/lib/postgresql/
ENV PATH=$bin_dir:/bin TZ=UTC PGDATA=/var/lib/postgresql/data
LABEL io.lattice.image=postgres
USER 999:999
ENTRYPOINT ["/usr/local/bin/lattice-postgres-entrypoint"]
EOF
    say "building image lattice/postgres:local (PostgreSQL $version of this machine)"
    docker_build lattice/postgres:local "$context"
    rm -rf -- "$context"
}

build() {
    need_docker
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to build (install Rust, e.g. with rustup)"
    build_postgres_image
    build_server_image
}

# brain-1's API answers and N cells have joined.
cells_joined() {
    local auth=()
    if [ -n "${LATTICE_USERNAME:-}" ]; then auth=(-u "$LATTICE_USERNAME:${LATTICE_PASSWORD:-}"); fi
    curl -fsS "${auth[@]}" "http://127.0.0.1:$api_port/v1/cells" 2>/dev/null | grep -o '"cell_id"' | wc -l
}

up() {
    build
    load_secrets
    say "starting the cluster (project $project)"
    compose up -d --remove-orphans
    say "waiting for 3 cells to join"
    local joined=0
    for _ in $(seq 1 120); do
        joined=$(cells_joined || true)
        [ "${joined:-0}" -ge 3 ] && break
        sleep 1
    done
    if [ "${joined:-0}" -lt 3 ]; then
        compose ps
        compose logs --tail 20
        die "only ${joined:-0} of 3 cells joined within 2 minutes (logs above)"
    fi
    cat <<EOF
==> the cluster is up: 2 brains, 3 cells, a router
    ltc target http://127.0.0.1:$api_port     # brain-1 (brain-2: 127.0.0.1:${LATTICE_CLUSTER_API_PORT_2:-9889})
    # for droplet commands, target brain-1 where cells reach it too:
    #   ltc target http://${LATTICE_CLUSTER_GATEWAY:-172.31.213.1}:$api_port
    ltc create hello lattice/lattice-app --instances 6
    curl http://hello.${LATTICE_CLUSTER_DOMAIN:-localhost}:${LATTICE_CLUSTER_ROUTER_PORT:-9080}/
    installers/cluster.sh down                # stop it
EOF
}

down() {
    need_docker
    load_secrets
    say "stopping the cluster (cells drain their instances)"
    compose down --remove-orphans --timeout 30
    # Instances of a cell that died without draining.
    local cell leftovers
    for cell in "${cells[@]}"; do
        leftovers=$(docker ps -aq --filter "label=io.lattice.owner=$cell")
        if [ -n "$leftovers" ]; then
            # shellcheck disable=SC2086
            docker rm -f $leftovers >/dev/null
        fi
    done
    say "stopped"
}

case "${1:-}" in
build) build ;;
up) up ;;
down) down ;;
status) load_secrets && compose ps ;;
logs) shift && load_secrets && compose logs "$@" ;;
-h | --help | help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' ;;
*)
    echo "usage: $0 build|up|down|status|logs (see --help)" >&2
    exit 2
    ;;
esac
