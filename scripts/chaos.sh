#!/usr/bin/env bash
# make chaos: the long form of the end-to-end durability suite (agent/chaos,
# issue 9). The short form runs in `make test`. Sized by environment:
# CHAOS_FORM (long), CHAOS_HOSTS, CHAOS_VMS, CHAOS_OPS, CHAOS_KILLS,
# CHAOS_DURATION, CHAOS_SEED, CHAOS_OUTAGES, CHAOS_SIM_FAULTS, CHAOS_DEADLINE,
# CHAOS_SPOOL_BYTES (see agent/chaos/README.md). The table is also written to
# CHAOS_REPORT (default chaos-report.txt); CHAOS_DIR keeps the work directory
# (agent logs, store, receivers' view) for forensics.
set -uo pipefail
cd "$(dirname "$0")/.."
export VMLINEAGE_CACHE="${VMLINEAGE_CACHE:-$HOME/.cache/vmlineage}"
if ! ./scripts/receivers/install.sh; then
  echo "chaos: the receivers (rsyslog, VictoriaLogs) could not be installed" >&2
  exit 1
fi
export CHAOS_FORM="${CHAOS_FORM:-long}"
export CHAOS_REPORT="${CHAOS_REPORT:-$PWD/chaos-report.txt}"
export CI=true # a missing receiver fails, never skips
exec go test -count=1 -v -timeout "${CHAOS_TIMEOUT:-4h}" -run '^TestChaos$' ./agent/chaos/
