# Sourced by the installers' test scripts: counted checks and a summary.
# Set CHECKS_NAME (e.g. "install test") before sourcing.
# shellcheck shell=bash

passed=0
failed=0
pass() {
    passed=$((passed + 1))
    printf 'ok   %s\n' "$*"
}
fail() {
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$*" >&2
}
note() { printf 'note %s\n' "$*"; }
summary() { printf '%s: %d passed, %d failed\n' "$CHECKS_NAME" "$passed" "$failed"; }
# A failure that the later steps cannot go on from.
abort() {
    fail "$*"
    summary
    exit 1
}
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# Keep the caller's settings out of the programs under test.
for var in $(env | sed -n 's/^\(LATTICE_[A-Z_]*\|LTC_[A-Z_]*\)=.*/\1/p'); do
    unset "$var"
done
