#!/bin/sh
# Installs the real checkers the formats tests run against. Idempotent: re-running
# does nothing when both are present.
#   lognormalizer  (Debian liblognorm-utils): parses every CEF line we emit
#   @elastic/ecs   (npm, pinned 9.4.0):        field definitions every ECS doc is checked against
# Env: VMLINEAGE_ECS_DIR (default $HOME/.cache/vmlineage/ecs) is where node_modules goes.
set -eu
ECS_VERSION=9.4.0
ECS_DIR=${VMLINEAGE_ECS_DIR:-${HOME:-/root}/.cache/vmlineage/ecs}

if ! command -v lognormalizer >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then echo "install-deps: need root to apt-get install liblognorm-utils" >&2; exit 1; fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y liblognorm-utils
fi
lognormalizer -v 2>/dev/null | head -1 || true

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then echo "install-deps: need node and npm" >&2; exit 1; fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
fi

have=$(node -e "try{console.log(require('$ECS_DIR/node_modules/@elastic/ecs/package.json').version)}catch(e){}" 2>/dev/null || true)
if [ "$have" != "$ECS_VERSION" ]; then
	mkdir -p "$ECS_DIR"
	[ -f "$ECS_DIR/package.json" ] || printf '{"name":"vmlineage-ecs-check","private":true}\n' > "$ECS_DIR/package.json"
	(cd "$ECS_DIR" && npm install --no-audit --no-fund --save-exact "@elastic/ecs@$ECS_VERSION")
fi
node -e "const e=require('$ECS_DIR/node_modules/@elastic/ecs'); console.log('@elastic/ecs', e.EcsVersion, Object.keys(e.EcsFlat).length, 'fields in', '$ECS_DIR')"
