#!/usr/bin/env bash
# make bench: every speed and memory figure the issues ask for, printed, never
# asserted. Heavy runs are sized by environment variables (see each line).
# Each benchmark runs once per setting (-benchtime 1x where a run is a whole
# scenario), but the enrichment latency, which runs five times; compare
# figures only within one run.
set -uo pipefail
cd "$(dirname "$0")/.."
export VMLINEAGE_CACHE="${VMLINEAGE_CACHE:-$HOME/.cache/vmlineage}"
./scripts/test-deps.sh >/dev/null 2>&1 || true
status=0
b() {
  echo
  echo "=== $*"
  if ! go test -run '^$' "$@" 2>&1 | grep -Ev '^(goos|goarch|pkg|cpu|PASS)'; then status=1; return 1; fi
}
# Issue 2: events/s from the simulator through the tracer into the store (10,000 VMs, 100,000 operations),
# and the agent's peak RSS with 100,000 VMs in the store.
b -bench 'TracePool' -benchtime 1x -timeout 60m ./agent/pipeline
b -bench 'RSS100kVMs' -benchtime 1x -timeout 60m ./agent/pipeline
# XAPI decoding (XML-RPC and JSON-RPC), events/s and allocations.
b -bench . -benchmem -benchtime 2s ./agent/xapi
# Issue 3: records/s encoded to ECS and CEF per core, allocations per record.
b -bench . -benchmem -cpu 1 ./formats/ecs ./formats/cef
# Issue 3: records/s delivered to rsyslog over TCP and to VictoriaLogs in bulk, peak RSS.
b -bench . -benchtime 300000x ./outputs/syslog ./outputs/elasticsearch
b -bench . -benchtime 100000x ./outputs/spool
# Issue 4: enrichment latency p50/p99 with 1,000,000 VMs at 1,000 alerts/s through the plugin path. Identical
# runs on this project's VM differ by up to 1.7 times in p99, so it runs VMLINEAGE_ENRICH_RUNS times (default 5)
# and ends with the spread: read the median, not one run.
enrich_runs="${VMLINEAGE_ENRICH_RUNS:-5}"
enrich_out=$(mktemp)
b -bench 'Enrich1MVMs' -benchtime 10000x -count "$enrich_runs" -timeout 120m ./agent/alerts | tee "$enrich_out" || status=1
awk 'BEGIN { n = 0 }
  /^BenchmarkEnrich1MVMs/ {
    for (i = 2; i < NF; i++) { if ($(i+1) == "p99-ms") p99[n] = $i; if ($(i+1) == "p50-ms") p50[n] = $i }
    n++
  }
  function isort(a, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } }
  function med(a, n) { return n % 2 ? a[int(n/2)] : (a[n/2-1] + a[n/2]) / 2 }
  END { if (n) { isort(p99, n); isort(p50, n)
    printf "Enrich1MVMs over %d runs: p99 median %.2f ms (%.2f-%.2f), p50 median %.2f ms; target p99 <= 5 ms\n", n, med(p99, n), p99[0], p99[n-1], med(p50, n) } }' "$enrich_out"
rm -f "$enrich_out"
# What one detector call costs in CPU on each side of the plugin boundary (gRPC over go-plugin's AutoMTLS).
b -bench 'EnrichCall' -benchtime 20000x ./plugins
# Issue 5: replay throughput (lines/s, lines per CPU-s, MB/s) on one core (GOMAXPROCS=1) over generated 1 GiB corpora,
# realistic (a busy pool's log) and dense (operations back to back), beside grep -c over the same file, and peak RSS;
# with and without the store. Corpora are made once into VMLINEAGE_BENCH_CACHE (default ~/.cache/vmlineage-bench);
# VMLINEAGE_BENCH_BYTES sets their size. Then the parser and deriver alone, and what one stored record costs.
b -bench . -benchtime 1x -cpu 1 -timeout 60m ./agent/logsource
b -bench . -cpu 1 ./agent/xensource
b -bench StoreRecords -benchtime 1x -cpu 1 -timeout 30m ./agent/lineage
# Issue 6: the RBAC audit line parser, lines/s and lines per CPU-second on one core, allocations per line.
b -bench . -benchmem -cpu 1 ./agent/audit
# Issue 8: a 10,000-VM pool drawn in headless Chromium.
b -bench . -benchtime 1x -timeout 20m ./agent/webui
exit $status
