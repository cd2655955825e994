#!/usr/bin/env bash
# Builds dist/*.deb and dist/*.rpm: the vmlineage binary and the shipped
# detector plugins (CGO_ENABLED=0), the default config with the detectors'
# SHA-256 written in, the man page, the Elasticsearch templates; then nfpm.
# Usage: packaging/build.sh [deb|rpm ...]   (default: both)
# Env: VERSION (default from git), GOARCH (default go env GOARCH), DIST (default dist).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
# nfpm is pinned here rather than as a go.mod tool: `go run pkg@version` is
# checked against the module checksum database and keeps nfpm's ~100
# dependencies out of the agent's module graph.
NFPM_VERSION=v2.45.2
NFPM=${NFPM:-"$GO run github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"}
DIST=${DIST:-dist}
export GOARCH=${GOARCH:-$($GO env GOARCH)}
export CGO_ENABLED=0

# Package versions must start with a digit: a tag v1.2.3 gives 1.2.3, an
# untagged tree 0.1.0~git<date>.<commit> (~ sorts before the release).
if [ -z "${VERSION:-}" ]; then
	desc=$(git describe --tags --match 'v[0-9]*' 2>/dev/null || true)
	if [[ "$desc" =~ ^v([0-9][0-9.]*)$ ]]; then
		VERSION=${BASH_REMATCH[1]}
	else
		VERSION="0.1.0~git$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date +%Y%m%d).$(git rev-parse --short HEAD 2>/dev/null || echo 0)"
	fi
fi
export VERSION
# nfpm.yaml names dist/stage literally (nfpm expands no variables in src).
STAGE=dist/stage
rm -rf "$STAGE"
rm -f "$DIST"/vmlineage_*.deb "$DIST"/vmlineage-*.rpm
mkdir -p "$STAGE/detectors" "$STAGE/elasticsearch"

echo "== build vmlineage $VERSION ($GOARCH)"
$GO build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$STAGE/vmlineage" ./cmd/vmlineage
# As plugins/build-detectors.sh (same names, same SHA256SUMS format), but
# stripped (-s -w): lintian rejects unstripped binaries.
for d in detectors/*/; do
	[ -f "$d/main.go" ] || continue
	$GO build -trimpath -ldflags "-s -w" -o "$STAGE/detectors/$(basename "$d")" "./$d"
done
(cd "$STAGE/detectors" && sha256sum $(ls | grep -v '^SHA256SUMS$') > SHA256SUMS)
$GO run ./packaging/internal/estemplates "$STAGE/elasticsearch"

# The detectors' pins go into the default config. While the config has no
# detectors section (probe: does `config check` accept one?) they are written
# as comments, next to the SHA256SUMS file the commands read.
pins_yaml="detectors:
  dir: /usr/lib/vmlineage/detectors
  pins:"
while read -r sum name; do
	pins_yaml+=$'\n'"    $name: $sum"
done < "$STAGE/detectors/SHA256SUMS"
probe="$STAGE/probe.yaml"
printf 'xapi:\n  password_env: VMLINEAGE_PROBE\n%s\n' "$pins_yaml" > "$probe"
if "$STAGE/vmlineage" config check "$probe" >/dev/null 2>&1; then
	pins_block=$pins_yaml
else
	pins_block=$(sed 's/^/# /' <<< "$pins_yaml")
fi
rm -f "$probe"
awk -v block="$pins_block" '$0 == "#@DETECTOR_PINS@" { print block; next } { print }' packaging/vmlineage.yaml > "$STAGE/vmlineage.yaml"
grep -q "$(head -c 64 < <(awk '{print $1; exit}' "$STAGE/detectors/SHA256SUMS"))" "$STAGE/vmlineage.yaml" || { echo "build.sh: pins not written" >&2; exit 1; }

./packaging/gen-man.sh "$STAGE/vmlineage" "$VERSION" | gzip -9n > "$STAGE/vmlineage.1.gz"

packagers=("$@")
[ ${#packagers[@]} -gt 0 ] || packagers=(deb rpm)
for p in "${packagers[@]}"; do
	echo "== nfpm $p"
	$NFPM package --config packaging/nfpm.yaml --packager "$p" --target "$DIST/"
done
ls -l "$DIST"/*.deb "$DIST"/*.rpm 2>/dev/null || true
