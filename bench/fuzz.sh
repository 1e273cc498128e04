#!/usr/bin/env bash
# libFuzzer with AddressSanitizer on four targets (Tests/Fuzz/): the MQTT decoder,
# the PROXY v2 parser, the Redis reply path and the TOML config loader, each for
# SECONDS from the seed corpus in Tests/Fuzz/corpus/TARGET (new inputs go to the
# results folder, not the repository). Prints executions per target, then the crashes
# found, last. A crash's input stays in the results folder: make it a regression test.
#   [TARGETS="fuzz-resp ..."] bench/fuzz.sh [SECONDS=60] [PARALLEL=1]     (PARALLEL: targets run at once)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}; PAR=${2:-1}
out=$(pwd)/bench/results/fuzz-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
targets=${TARGETS:-fuzz-mqtt fuzz-proxy fuzz-resp fuzz-config}
# Own build folder: every module gets the sanitizer and coverage instrumentation.
# lld links: gold fails on the fuzzer runtime's symbols.
for t in $targets; do   # one --product per build: swift build keeps only the last
  PILEGATE_FUZZ=1 swift build --build-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld \
    -Xcc -fsanitize=fuzzer-no-link,address -Xcxx -fsanitize=fuzzer-no-link,address \
    --product "$t" >>"$out/build.log" 2>&1 || { tail -20 "$out/build.log"; exit 1; }
done
artifacts() { ls "$out" | grep -c "^$1-\(crash\|leak\|timeout\|oom\)-" || true; }
run() {
  local t=$1 left=$SECS chunk
  mkdir -p "$out/corpus-$t"
  # Every config read leaks TOMLKit's table (Tests/Fuzz/lsan.supp), so libFuzzer would run
  # a full leak scan after every input: two thirds of fuzz-config's time (perf). Not for it;
  # and each target runs in chunks of at most 10 minutes, so that leak cannot reach the RSS limit.
  local leaks=1; [ "$t" = fuzz-config ] && leaks=0
  local started=$SECONDS
  while [ "$left" -gt 0 ] && [ "$(artifacts "$t")" -eq 0 ]; do
    chunk=$((left < 600 ? left : 600)); left=$((left - chunk))
    ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=Tests/Fuzz/lsan.supp nice .build-fuzz/debug/$t \
      -max_total_time="$chunk" -print_final_stats=1 -detect_leaks=$leaks -timeout=10 -rss_limit_mb=4096 \
      -artifact_prefix="$out/$t-" "$out/corpus-$t" "Tests/Fuzz/corpus/$t" >>"$out/$t.log" 2>&1 || true
  done
  echo $((SECONDS - started)) >"$out/$t.seconds"   # shorter than asked when a crash stopped it
}
running=0
for t in $targets; do
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$PAR" ]; then wait -n; running=$((running - 1)); fi
done
wait
crashes=0
for t in $targets; do
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$t.log" | awk '{n += $2} END {print n + 0}')
  cov=$(grep -o 'cov: [0-9]*' "$out/$t.log" | tail -1 || true)
  found=$(artifacts "$t")
  crashes=$((crashes + found))
  echo "$t: $(cat "$out/$t.seconds") s, $execs executions, $cov, corpus $(ls "$out/corpus-$t" | wc -l) new inputs, $found crashes"
done
echo "results: $out"
echo "crashes found: $crashes"
