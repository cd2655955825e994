#!/usr/bin/env bash
# CI acceptance of the packages (issue 7): builds the .deb and .rpm, checks
# the .deb with lintian (no errors) and the .rpm with rpm -qpl/-qpi, installs
# the .deb, checks the installed config, runs the installed agent as the
# vmlineage user against the simulator until records appear, then removes
# and purges the package and checks what is left.
# Needs root and dpkg (Debian/Ubuntu). No systemd here: the unit is only
# verified and scored; the agent is run directly, as the service would.
# Idempotent: a vmlineage package left by an earlier run is purged first, and
# everything this run creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PKG=vmlineage
step() { echo "== package-test: $*"; }
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (dpkg -i)"
command -v dpkg >/dev/null || fail "dpkg not found: this test needs a Debian-based system"

# Tools: lintian and rpm, installed once.
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v rpm >/dev/null || need+=(rpm)
if [ ${#need[@]} -gt 0 ]; then
	step "apt-get install ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq "${need[@]}" >/dev/null
fi

W=$(mktemp -d /tmp/vmlineage-package-test.XXXXXX)
chmod 0755 "$W" # the agent (vmlineage user) reads the probe config here
SIM_PID="" AGENT_PID=""
cleanup() {
	rc=$?
	[ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
	[ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
	if dpkg -s "$PKG" >/dev/null 2>&1 || dpkg -l "$PKG" 2>/dev/null | grep -q "^rc"; then
		dpkg --purge "$PKG" >/dev/null 2>&1 || true
	fi
	getent passwd vmlineage >/dev/null && userdel vmlineage 2>/dev/null || true
	getent group vmlineage >/dev/null && groupdel vmlineage 2>/dev/null || true
	if [ $rc -ne 0 ]; then
		for f in "$W"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }; done
	fi
	rm -rf "$W"
	exit $rc
}
trap cleanup EXIT

if dpkg -l "$PKG" 2>/dev/null | grep -q '^[ir]'; then
	step "purging a $PKG package left installed"
	dpkg --purge "$PKG" >/dev/null
fi

step "build"
DIST=dist ./packaging/build.sh
DEB=$(ls dist/${PKG}_*.deb)
RPM=$(ls dist/${PKG}-*.rpm)

step "lintian $DEB"
lintian --fail-on error --tag-display-limit 0 "$DEB" || fail "lintian reports errors"

step "rpm -qpi / -qpl $RPM"
rpm -qpi "$RPM"
files=$(rpm -qpl "$RPM")
for f in /usr/bin/vmlineage /etc/vmlineage/vmlineage.yaml /usr/lib/systemd/system/vmlineage.service \
	/usr/lib/vmlineage/detectors/SHA256SUMS /usr/lib/vmlineage/detectors/lineage-suspects \
	/usr/share/vmlineage/kibana/vmlineage.ndjson /usr/share/vmlineage/elasticsearch/index-template.json \
	/usr/share/man/man1/vmlineage.1.gz /usr/share/doc/vmlineage/copyright; do
	grep -qx "$f" <<<"$files" || fail "rpm lacks $f"
done
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]' "$RPM" | grep -qx '/etc/vmlineage/vmlineage.yaml cn -rw-r-----' ||
	fail "rpm: the config is not %config(noreplace) 0640"
rpm -qp --scripts "$RPM" | grep -q useradd || fail "rpm: no %pre creating the user"

step "dpkg -i"
dpkg -i "$DEB"
id vmlineage
[ ! -e /etc/systemd/system/multi-user.target.wants/vmlineage.service ] || fail "the service must not be enabled before it is configured"
[ "$(stat -c '%U:%G %a' /etc/vmlineage/vmlineage.yaml)" = "root:vmlineage 640" ] || fail "config is $(stat -c '%U:%G %a' /etc/vmlineage/vmlineage.yaml), want root:vmlineage 640"
[ "$(stat -c '%U:%G' /var/lib/vmlineage)" = "vmlineage:vmlineage" ] || fail "state dir not owned by vmlineage"
dpkg-query -W -f='${Conffiles}\n' "$PKG" | grep -q /etc/vmlineage/vmlineage.yaml || fail "config is not a conffile"
/usr/bin/vmlineage version
# The pins written into the config are those of the installed detectors.
while read -r sum name; do
	grep -q "$name: $sum" /etc/vmlineage/vmlineage.yaml || fail "config lacks the pin of $name"
	[ "$(sha256sum "/usr/lib/vmlineage/detectors/$name" | cut -d' ' -f1)" = "$sum" ] || fail "$name does not match its pin"
done </usr/lib/vmlineage/detectors/SHA256SUMS
man -l /usr/share/man/man1/vmlineage.1.gz 2>/dev/null | grep -q "vmlineage config check" || fail "man page does not cover config check"

step "systemd-analyze verify / security"
# verify looks up man: pages named in Documentation=; man-db is not a dependency.
{ systemd-analyze verify /usr/lib/systemd/system/vmlineage.service 2>&1 || true; } | { grep -v "man vmlineage(1)" || true; } | tee "$W/verify.log"
! grep -qi "error\|fail\|not executable" "$W/verify.log" || fail "systemd-analyze verify"
systemd-analyze security --offline=yes /usr/lib/systemd/system/vmlineage.service | tail -n 1

step "config check on the installed config"
/usr/bin/vmlineage config check /etc/vmlineage/vmlineage.yaml

step "simulator"
SECRET="pkg-test-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$SECRET" >"$W/sim-password"
/usr/bin/vmlineage sim --scenario threat-model --listen 127.0.0.1:0 --speed 20 --password-file "$W/sim-password" >"$W/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 100); do grep -q '^fingerprint:' "$W/sim.log" && break; sleep 0.2; done
URL=$(awk '/^url:/ {print $2}' "$W/sim.log")
FP=$(awk '/^fingerprint:/ {print $2}' "$W/sim.log")
[ -n "$URL" ] && [ -n "$FP" ] || fail "simulator did not print url and fingerprint"

# The operator's way: a password file readable by the service group.
install -m 0640 -o root -g vmlineage /dev/null /etc/vmlineage/xapi-password
printf '%s\n' "$SECRET" >/etc/vmlineage/xapi-password

step "config check --connect (as vmlineage)"
sed -e "s|^  url: \"\"|  url: $URL|" -e "s|^  fingerprint: \"\"|  fingerprint: $FP|" \
	-e "s|^  password_env: .*|  password_file: /etc/vmlineage/xapi-password|" /etc/vmlineage/vmlineage.yaml >"$W/connect.yaml"
chmod 0644 "$W/connect.yaml"
runuser -u vmlineage -- /usr/bin/vmlineage config check --connect "$W/connect.yaml" | tee "$W/check.log"
grep -q "XAPI login succeeded" "$W/check.log" || fail "config check --connect"

step "agent (as vmlineage) until records appear"
runuser -u vmlineage -- /usr/bin/vmlineage agent --config /etc/vmlineage/vmlineage.yaml --log-level debug \
	--xapi-url "$URL" --xapi-fingerprint "$FP" --xapi-password-file /etc/vmlineage/xapi-password >"$W/agent.log" 2>&1 &
AGENT_PID=$!
n=0
for _ in $(seq 120); do
	kill -0 "$AGENT_PID" 2>/dev/null || fail "agent exited"
	n=$(runuser -u vmlineage -- /usr/bin/vmlineage records --data-dir /var/lib/vmlineage --format json 2>/dev/null | grep -c '"activity"' || true)
	[ "$n" -ge 3 ] && break
	sleep 1
done
[ "$n" -ge 3 ] || fail "no records after 120 s (have $n)"
echo "records in /var/lib/vmlineage: $n"
runuser -u vmlineage -- /usr/bin/vmlineage records --data-dir /var/lib/vmlineage | head -n 5
kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=""
grep -q "vmlineage agent stopped" "$W/agent.log" || fail "agent did not stop cleanly on SIGTERM"
! grep -qF "$SECRET" "$W/agent.log" "$W/check.log" || fail "the XAPI password appears in the agent's logs or config check output"
kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=""

step "dpkg -r"
dpkg -r "$PKG"
[ ! -e /usr/bin/vmlineage ] || fail "binary left after remove"
[ ! -e /usr/lib/vmlineage ] || fail "/usr/lib/vmlineage left after remove"
[ -f /etc/vmlineage/vmlineage.yaml ] || fail "remove must keep the config"
[ -d /var/lib/vmlineage ] || fail "remove must keep the state"
dpkg -l "$PKG" | grep -q '^rc' || fail "package not in config-files state"

step "dpkg --purge"
dpkg --purge "$PKG"
left=$(ls -d /etc/vmlineage /var/lib/vmlineage /usr/lib/vmlineage /usr/share/vmlineage /usr/share/doc/vmlineage 2>/dev/null || true)
[ -z "$left" ] || fail "left after purge: $left"
! dpkg -s "$PKG" >/dev/null 2>&1 || fail "dpkg still knows $PKG"
echo "left after purge: the vmlineage user and group (Debian policy keeps system users); removed by this test"
step "OK"
