#!/bin/sh
# Installs the headless browser the webui tests drive (Debian's chromium).
# Idempotent: does nothing when a chromium is already on PATH or named by
# VMLINEAGE_CHROMIUM. Needs root (or sudo) for apt-get.
set -eu
if [ -n "${VMLINEAGE_CHROMIUM:-}" ] && [ -x "$VMLINEAGE_CHROMIUM" ]; then
	exit 0
fi
for b in chromium chromium-browser google-chrome headless-shell; do
	if command -v "$b" >/dev/null 2>&1; then
		exit 0
	fi
done
SUDO=
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt run (other test installers) rather than failing.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends chromium fonts-dejavu-core
command -v chromium
