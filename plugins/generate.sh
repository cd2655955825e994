#!/bin/sh
# Regenerates plugins/proto/*.pb.go from detector.proto. Installs protoc
# (Debian protobuf-compiler) and the Go generators into a cache folder when
# missing. The generated files are committed; run this only after editing
# the .proto. Versions match go.mod: protobuf v1.36.6, grpc v1.61 (go-plugin
# v1.8.0's), hence protoc-gen-go-grpc v1.3.0 (newer ones need grpc >= 1.64).
set -eu
cd "$(dirname "$0")"
TOOLS="${VMLINEAGE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/vmlineage-tools}"
mkdir -p "$TOOLS"
if ! command -v protoc >/dev/null 2>&1; then
	apt-get update && apt-get install -y protobuf-compiler
fi
[ -x "$TOOLS/protoc-gen-go" ] || GOBIN="$TOOLS" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.6
[ -x "$TOOLS/protoc-gen-go-grpc" ] || GOBIN="$TOOLS" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.3.0
PATH="$TOOLS:$PATH" protoc -I proto \
	--go_out=proto --go_opt=paths=source_relative \
	--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
	proto/detector.proto
