#!/usr/bin/env bash
# The whole test suite once under ThreadSanitizer: every module, the pilegate binary the
# integration tests start and pileload built with -sanitize=thread in their own build
# folder. Each process writes its reports to the results folder (TSAN_OPTIONS log_path);
# the tests judge behaviour as usual (exitcode=0: a report does not fail a process's exit
# check), and this prints the distinct reports, by the first frames of both accesses,
# then the test summary and the report count, last.
#   bench/tsan.sh [TEST FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
filter=${1:-}
out=$(pwd)/bench/results/tsan-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
swift build --build-path .build-tsan --sanitize=thread --build-tests >"$out/build.log" 2>&1 || { tail -20 "$out/build.log"; exit 1; }
set +e
TSAN_OPTIONS="log_path=$out/report exitcode=0 halt_on_error=0 second_deadlock_stack=1" \
  swift test --build-path .build-tsan --sanitize=thread --skip-build --disable-swift-testing ${filter:+--filter "$filter"} \
  >"$out/test.log" 2>&1
set -e
# One line per distinct report: its kind and the first Swift frame of each stack.
python3 - "$out" <<'PY'
import glob, re, sys, collections
seen = collections.Counter()
for path in glob.glob(sys.argv[1] + "/report.*"):
    for block in open(path, errors="replace").read().split("==================")[1:]:
        kind = re.search(r"WARNING: ThreadSanitizer: ([^(\n]+)", block)
        if not kind:
            continue
        frames = re.findall(r"#\d+ (\S+) (/work\S+|\S+\.swift:\d+)", block)
        ours = [f"{f[0][:60]} {f[1].split('/')[-1]}" for f in frames if "/Sources/" in f[1] or "/LoadTest/" in f[1]][:2]
        seen[kind.group(1).strip() + " | " + " <- ".join(ours)] += 1
for key, n in seen.most_common():
    print(f"{n:5d}  {key}")
PY
summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" "$out/test.log" | tail -1)
grep -E "error: .*(failed|XCT)" "$out/test.log" | cut -c1-300 | head -20 || true
echo "tests: ${summary:-no summary (see $out/test.log)}"
echo "results: $out"
echo "reports: $(cat "$out"/report.* 2>/dev/null | grep -c 'WARNING: ThreadSanitizer' || true)"
