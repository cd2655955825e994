#!/usr/bin/env bash
# Installs what the test suite needs and does not find: Debian packages
# (apt, when root), Go tools into $VMLINEAGE_CACHE/bin, npm packages into
# $VMLINEAGE_CACHE. Each component's own script is idempotent. With CI=true a
# failed install fails the run; otherwise it warns and the affected tests
# skip with a message.
set -uo pipefail
cd "$(dirname "$0")/.."
export VMLINEAGE_CACHE="${VMLINEAGE_CACHE:-$HOME/.cache/vmlineage}"
mkdir -p "$VMLINEAGE_CACHE/bin"
status=0
run() {
  echo "== test-deps: $*"
  if ! "$@"; then
    echo "test-deps: FAILED: $*" >&2
    status=1
  fi
}
for s in formats/testdata/install-deps.sh scripts/receivers/install.sh agent/webui/scripts/install-chromium.sh; do
  [ -x "$s" ] && run "$s"
done
if [ "$status" -ne 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "test-deps: a test dependency could not be installed and CI=true: failing" >&2
    exit 1
  fi
  echo "test-deps: some dependencies are missing; the tests that need them will say so" >&2
fi
exit 0
