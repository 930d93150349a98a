#!/usr/bin/env bash
# Checks the crate graph's rules (docs/architecture.md, "Crate graph"):
#   1. ltc links only lattice-client and lattice-models of our crates, and
#      none of the server's heavy dependencies (bollard, axum, sqlx,
#      tracing-subscriber): a client must not link the server.
#   2. The auctioneer links no cell crate (rep, executor, garden) nor
#      bollard: it reaches reps through lattice-client's RepClient.
#   3. Only the `lattice` binary (and the test kit) compile a store backend
#      or the Docker backend: every other crate links neither sqlx nor
#      bollard (lattice-bbs's `sqlite`/`postgres` and lattice-garden's
#      `docker` features stay off in them).
#   4. The graph drawn in docs/architecture.md is the one the manifests say.
# Usage: installers/check-deps.sh          check (exit 1 on a violation)
#        installers/check-deps.sh --write  redraw the graph in the doc
# Needs only cargo (offline: it reads Cargo.lock).
set -euo pipefail
cd "$(dirname "$0")/.."

doc=docs/architecture.md
begin='<!-- crate-graph:begin (installers/check-deps.sh --write) -->'
end='<!-- crate-graph:end -->'
forbidden='bollard axum sqlx tracing-subscriber'
allowed_ours='lattice-client lattice-models'
status=0

# --- 1. what ltc links -----------------------------------------------------
ltc_deps=$(cargo tree --offline -p ltc -e normal --prefix none | awk '{print $1}' | sort -u)
for name in $forbidden; do
    if grep -qx "$name" <<<"$ltc_deps"; then
        echo "check-deps: ltc links $name (see: cargo tree -p ltc -e normal -i $name)" >&2
        status=1
    fi
done
for name in $(grep -E '^lattice' <<<"$ltc_deps" || true); do
    case " $allowed_ours " in
    *" $name "*) ;;
    *)
        echo "check-deps: ltc links the server crate $name; move what it needs into lattice-client or lattice-models" >&2
        status=1
        ;;
    esac
done
echo "check-deps: ltc links $(wc -l <<<"$ltc_deps") crates"

# --- 2. what the auctioneer links -----------------------------------------
auctioneer_deps=$(cargo tree --offline -p lattice-auctioneer -e normal --prefix none | awk '{print $1}' | sort -u)
for name in lattice-rep lattice-executor lattice-garden bollard; do
    if grep -qx "$name" <<<"$auctioneer_deps"; then
        echo "check-deps: the auctioneer links $name; it must reach cells through lattice-client's RepClient" >&2
        status=1
    fi
done

# --- 3. who compiles a backend --------------------------------------------
for crate in lattice-models lattice-client lattice-bbs lattice-receptor lattice-auctioneer \
    lattice-converger lattice-rep lattice-executor lattice-garden lattice-logs \
    lattice-router lattice-fileserver lattice-ui; do
    deps=$(cargo tree --offline -p "$crate" -e normal --prefix none | awk '{print $1}' | sort -u)
    for name in sqlx bollard; do
        if grep -qx "$name" <<<"$deps"; then
            echo "check-deps: $crate links $name; only the lattice binary turns on a store or Docker backend (see: cargo tree -p $crate -e normal,features -i $name)" >&2
            status=1
        fi
    done
done

# --- 4. the drawn graph ----------------------------------------------------
# Our crates' direct normal dependencies on each other, from the manifests
# (`--depth 1` lists each member, depth 0, then its direct dependencies).
# Names lose the `lattice-` prefix to keep the picture short.
graph() {
    echo '```mermaid'
    echo 'graph TD'
    cargo tree --offline --workspace -e normal --depth 1 --no-dedupe --prefix depth |
        awk '
            function short(n) { sub(/^lattice-/, "", n); return n == "" ? "lattice" : n }
            /^0/ { from = substr($1, 2); next }
            /^1(lattice|ltc)/ { print "    " short(from) " --> " short(substr($1, 2)) }
        ' | sort -u
    echo '```'
}
drawn=$(graph)

if [ "${1:-}" = "--write" ]; then
    tmp=$(mktemp)
    awk -v begin="$begin" -v end="$end" -v graph="$drawn" '
        $0 == begin { print; print graph; skip = 1; next }
        $0 == end { skip = 0 }
        !skip { print }
    ' "$doc" >"$tmp"
    mv "$tmp" "$doc"
    echo "check-deps: redrew the crate graph in $doc"
else
    current=$(awk -v begin="$begin" -v end="$end" '
        $0 == end { inside = 0 }
        inside { print }
        $0 == begin { inside = 1 }
    ' "$doc")
    if [ "$current" != "$drawn" ]; then
        echo "check-deps: the crate graph in $doc is out of date; run installers/check-deps.sh --write" >&2
        diff <(echo "$current") <(echo "$drawn") >&2 || true
        status=1
    fi
fi

exit "$status"
