#!/bin/sh
# Builds the shipped detector plugins into DIR (default bin/detectors) and
# writes DIR/SHA256SUMS, the pins `vmlineage enrich` and `alerts serve` read
# from the plugin directory. Usage: plugins/build-detectors.sh [DIR]
set -eu
cd "$(dirname "$0")/.."
DIR="${1:-bin/detectors}"
mkdir -p "$DIR"
for d in detectors/*/; do
	name=$(basename "$d")
	go build -trimpath -o "$DIR/$name" "./$d"
done
(cd "$DIR" && sha256sum $(ls | grep -v '^SHA256SUMS$') > SHA256SUMS)
echo "detectors in $DIR, pins in $DIR/SHA256SUMS"
