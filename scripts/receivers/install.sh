#!/usr/bin/env bash
# Installs the real receivers the outputs tests talk to: rsyslog (UDP/TCP/TLS),
# lognormalizer, socat, openssl from apt; syslog-ng-core unpacked (it conflicts
# with rsyslog in apt); VictoriaLogs built from the Go module proxy.
# Idempotent: each step is skipped when its result is already present.
# Everything lands in $VMLINEAGE_CACHE (default $HOME/.cache/vmlineage).
set -euo pipefail
CACHE="${VMLINEAGE_CACHE:-$HOME/.cache/vmlineage}"
BIN="$CACHE/bin"
VL_VERSION="${VL_VERSION:-v1.52.1}"
mkdir -p "$BIN"

# Other jobs may hold apt's locks (CI images, parallel installs): wait, then retry.
apt_retry() {
  local i
  for i in $(seq 1 60); do
    if apt-get -o DPkg::Lock::Timeout=120 "$@"; then return 0; fi
    sleep 5
  done
  return 1
}

need_apt=()
command -v rsyslogd >/dev/null || need_apt+=(rsyslog)
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -n "$(ls /usr/lib/*/rsyslog/lmnsd_gtls.so 2>/dev/null)" ] || need_apt+=(rsyslog-gnutls)
[ -n "$(ls /usr/lib/*/rsyslog/lmnsd_ossl.so 2>/dev/null)" ] || need_apt+=(rsyslog-openssl)
command -v lognormalizer >/dev/null || need_apt+=(liblognorm-utils)
command -v socat >/dev/null || need_apt+=(socat)
command -v openssl >/dev/null || need_apt+=(openssl)
# syslog-ng's runtime libraries install beside rsyslog without conflict.
for p in libivykis0 libnet1 libpcre3; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt_retry update -qq
  apt_retry install -y -qq "${need_apt[@]}" >/dev/null
fi

# syslog-ng: unpack, never install (apt would remove rsyslog).
SNG="$CACHE/syslog-ng"
if [ ! -x "$SNG/usr/sbin/syslog-ng" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download syslog-ng-core >/dev/null 2>&1 || { apt_retry update -qq && apt-get download syslog-ng-core >/dev/null; }; })
  mkdir -p "$SNG"
  dpkg-deb -x "$tmp"/syslog-ng-core_*.deb "$SNG"
  rm -rf "$tmp"
fi
# A wrapper so tests only need one path.
cat > "$BIN/syslog-ng" <<W
#!/bin/sh
mp=\$(ls -d "$SNG"/usr/lib/syslog-ng/[0-9]* | head -1)
exec env LD_LIBRARY_PATH="$SNG/usr/lib/syslog-ng" "$SNG/usr/sbin/syslog-ng" --module-path="\$mp" "\$@"
W
chmod 0755 "$BIN/syslog-ng"

# VictoriaLogs: several minutes on 2 cores, so it is last and skipped when present.
if [ ! -x "$BIN/victoria-logs" ] || ! go version -m "$BIN/victoria-logs" 2>/dev/null | grep -q "$VL_VERSION"; then
  GOBIN="$BIN" GOFLAGS=-buildvcs=false go install "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs@$VL_VERSION"
fi
echo "receivers ready in $BIN (rsyslogd: $(command -v rsyslogd))"
