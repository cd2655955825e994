#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a short time each, then keeps
# the inputs the fuzzer found interesting in the package's testdata/fuzz, so
# plain `go test` replays them from then on.
# Usage: scripts/fuzz.sh [fuzztime] [package-pattern]   (default 30s, ./...)
set -euo pipefail
t="${1:-30s}"
pattern="${2:-./...}"
cd "$(dirname "$0")/.."
cache="$(go env GOCACHE)/fuzz"
for pkg in $(go list "$pattern"); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)' "$dir"/*_test.go 2>/dev/null | awk '{print $2}'); do
    echo "== $pkg $f ($t)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg"
    if [ -d "$cache/$pkg/$f" ]; then
      mkdir -p "$dir/testdata/fuzz/$f"
      n=0
      for c in "$cache/$pkg/$f"/*; do
        [ -e "$dir/testdata/fuzz/$f/$(basename "$c")" ] || { cp "$c" "$dir/testdata/fuzz/$f/"; n=$((n+1)); }
      done
      echo "   kept $n new corpus entries in ${dir#$PWD/}/testdata/fuzz/$f"
    fi
  done
done
