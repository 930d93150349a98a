#!/usr/bin/env bash
# CI check "a cluster of separate machines": starts installers/cluster.sh's
# containerised cluster (PostgreSQL, 2 brains, 3 cells in zones z1/z2, a
# router), then with `ltc` against it: an app of 6 instances spread over
# every cell, routed; a cell with a wrong secret refused; a killed cell's
# instances RUNNING elsewhere, and its leftovers destroyed when it comes
# back; the active brain killed and the standby scheduling; then stops the
# cluster and checks nothing is left behind.
#
# Usage: installers/test-cluster.sh
# Needs what installers/cluster.sh needs, and curl.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in
/*) ;;
*) target_dir="$PWD/$target_dir" ;;
esac
export CARGO_TARGET_DIR=$target_dir

case "${1:-}" in
'') ;;
-h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
*) echo "usage: $0" >&2 && exit 2 ;;
esac

CHECKS_NAME="cluster test"
# shellcheck source=installers/checks.sh
. "$repo/installers/checks.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lattice-cluster-test.XXXXXX")
# The cluster's secrets live in the test's own data dir.
export XDG_DATA_HOME=$tmp/data
export LTC_CONFIG_DIR=$tmp/ltc
cluster=$repo/installers/cluster.sh
api=http://127.0.0.1:${LATTICE_CLUSTER_API_PORT:-9888}
api_2=http://127.0.0.1:${LATTICE_CLUSTER_API_PORT_2:-9889}
router=http://127.0.0.1:${LATTICE_CLUSTER_ROUTER_PORT:-9080}

cleanup() {
    local status=$?
    "$cluster" down >/dev/null 2>&1 || true
    rm -rf -- "$tmp"
    exit "$status"
}
trap cleanup EXIT

# The id of a service's container.
container_of() {
    docker ps -aq --filter label=com.docker.compose.project=lattice-cluster \
        --filter "label=com.docker.compose.service=$1"
}

# wait_for SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 1
    done
}

# The cells of the app's RUNNING instances, one line each (from `ltc status`).
running_cells() {
    "$ltc" status "$1" 2>/dev/null | grep RUNNING | grep -o 'cluster-cell-[0-9]*' || true
}
running_count() { running_cells "$1" | wc -l; }
app_running() { [ "$(running_count "$1")" -eq "$2" ]; }

cells_listed() { "$ltc" cells 2>/dev/null | grep -c 'cluster-cell-' || true; }
cells_are() { [ "$(cells_listed)" -eq "$1" ]; }

owned_by() { docker ps -aq --filter "label=io.lattice.owner=$1" | wc -l; }

echo "building ltc"
(cd "$repo" && cargo build --quiet -p ltc) || abort "cargo build -p ltc"
ltc=$target_dir/debug/ltc

echo "starting the cluster (builds the images)"
if "$cluster" up; then pass "cluster up: 2 brains, 3 cells, router"; else abort "cluster up"; fi

"$ltc" target "$api" >/dev/null || abort "ltc target $api"
if cells_are 3; then pass "ltc cells lists 3 cells"; else fail "ltc cells: $(cells_listed) cells"; fi
if "$ltc" cells | grep -q z2; then pass "cells in zone z2 too"; else fail "no cell in z2"; fi

started=$SECONDS
if "$ltc" create web lattice/lattice-app --instances 6 >"$tmp/create.out" 2>&1; then
    pass "ltc create web (6 instances)"
else
    cat "$tmp/create.out" >&2
    abort "ltc create web"
fi
if wait_for 120 app_running web 6; then
    pass "6 instances RUNNING after $((SECONDS - started)) s"
else
    "$ltc" status web >&2 || true
    abort "6 instances RUNNING"
fi
spread=$(running_cells web | sort -u | wc -l)
if [ "$spread" -eq 3 ]; then
    pass "instances spread over all 3 cells (both zones): $(running_cells web | sort | uniq -c | tr -s ' \n' ' ')"
else
    fail "instances on $spread cells"
fi

routed() { curl -fsS -H "Host: web.localhost" "$router/index" >>"$tmp/indexes" 2>/dev/null; }
: >"$tmp/indexes"
if wait_for 30 routed; then
    for _ in $(seq 1 20); do routed || true; done
    pass "the router reaches the app ($(sort -u "$tmp/indexes" | wc -l) instances answered 21 requests)"
else
    fail "the router reaches the app"
fi

# A cell presenting a wrong secret: refused, and never listed.
network=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}' "$(container_of brain-1)")
if docker run --rm --label io.lattice.owner=lattice-cluster --network "$network" \
    -e LATTICE_SECRET=not-the-secret lattice/server:local \
    cell --brain http://brain-1:8888 --cell-id intruder >"$tmp/intruder.out" 2>&1; then
    fail "a cell with a wrong secret started"
elif grep -qi secret "$tmp/intruder.out"; then
    pass "a cell with a wrong secret is refused: $(grep -i secret "$tmp/intruder.out" | tail -n 1 | cut -c1-160)"
else
    cat "$tmp/intruder.out" >&2
    fail "a cell with a wrong secret: refused without naming the secret"
fi
if "$ltc" cells | grep -q intruder; then fail "the intruder is listed"; else pass "the intruder is not listed"; fi

# Kill cell-3 as a machine dies: its instances are placed on the others.
on_cell_3=$(running_cells web | grep -c 'cluster-cell-3$' || true)
killed=$SECONDS
docker kill "$(container_of cell-3)" >/dev/null
not_on_cell_3() {
    app_running web 6 && ! running_cells web | grep -q 'cluster-cell-3$'
}
if wait_for 90 not_on_cell_3; then
    pass "cell-3 killed ($on_cell_3 instances): 6 RUNNING on the other cells after $((SECONDS - killed)) s (presence TTL 10 s)"
else
    "$ltc" status web >&2 || true
    fail "cell-3's instances re-placed"
fi
leftovers=$(owned_by cluster-cell-3)
note "cell-3's containers left on the engine while it is down: $leftovers"
docker start "$(container_of cell-3)" >/dev/null
cell_3_clean() { cells_are 3 && [ "$(owned_by cluster-cell-3)" -eq 0 ]; }
if wait_for 60 cell_3_clean; then
    pass "cell-3 back: rejoined and destroyed the $leftovers containers no longer its own"
else
    fail "cell-3 back: $(cells_listed) cells, $(owned_by cluster-cell-3) containers of cell-3"
fi

# Kill the brain that holds the auctioneer lock; the other one takes over.
# Whether a brain's last word on the auctioneer lock is that it holds it.
says_it_holds_lock() {
    docker logs "$(container_of "$1")" 2>&1 | grep 'auctioneer lock changed hands' |
        tail -n 1 | grep -q 'active=true'
}
active_brain() {
    local brain
    for brain in brain-1 brain-2; do
        if says_it_holds_lock "$brain"; then
            echo "$brain"
            return
        fi
    done
}
active=$(active_brain)
if [ -z "$active" ]; then
    fail "no brain says it holds the auctioneer lock"
else
    standby=brain-1
    standby_api=$api
    if [ "$active" = brain-1 ]; then
        standby=brain-2
        standby_api=$api_2
    fi
    killed=$SECONDS
    docker kill "$(container_of "$active")" >/dev/null
    "$ltc" target "$standby_api" >/dev/null
    if "$ltc" scale web 8 >"$tmp/scale.out" 2>&1 && wait_for 120 app_running web 8; then
        pass "$active killed: $standby scheduled web's scale to 8 (all RUNNING $((SECONDS - killed)) s after the kill; lock TTL 15 s)"
    else
        cat "$tmp/scale.out" >&2
        "$ltc" status web >&2 || true
        fail "$active killed: the standby did not take over"
    fi
    # The router, following brain-1 first, still routes to new instances.
    : >"$tmp/indexes"
    eight_routed() {
        for _ in $(seq 1 16); do routed || true; done
        [ "$(sort -u "$tmp/indexes" | wc -l)" -ge 8 ]
    }
    if wait_for 60 eight_routed; then
        pass "the router reaches all 8 instances after $active died"
    else
        fail "the router reaches $(sort -u "$tmp/indexes" | wc -l) of 8 instances after $active died"
    fi
    if says_it_holds_lock "$standby"; then
        pass "$standby holds the auctioneer lock"
    else
        fail "$standby does not say it holds the auctioneer lock"
    fi
    docker start "$(container_of "$active")" >/dev/null
fi

if "$ltc" remove web >/dev/null 2>&1; then pass "ltc remove web"; else fail "ltc remove web"; fi
no_instances() { [ "$(running_count web)" -eq 0 ]; }
wait_for 60 no_instances || fail "web's instances stopped"

if "$cluster" down >"$tmp/down.out" 2>&1; then pass "cluster down"; else
    cat "$tmp/down.out" >&2
    fail "cluster down"
fi
left=$(docker ps -aq --filter label=com.docker.compose.project=lattice-cluster | wc -l)
for cell in cluster-cell-1 cluster-cell-2 cluster-cell-3 lattice-cluster; do
    left=$((left + $(owned_by "$cell")))
done
if [ "$left" -eq 0 ]; then pass "nothing left running"; else fail "$left containers left"; fi

summary
[ "$failed" -eq 0 ]
