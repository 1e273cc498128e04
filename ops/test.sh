#!/usr/bin/env bash
# Install dependencies, then run every test: codec, loop, and integration tests
# that start the real pilegate binary and drive it with mosquitto-clients and paho.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh
swift build --build-tests
log=$(mktemp)
set +e
swift test --skip-build --disable-swift-testing 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One plain closing line: N passed, N failed (from XCTest's own summary).
summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1)
total=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$summary")
failed=$(sed -E 's/.*with ([0-9]+) failures?.*/\1/' <<<"$summary")
rm -f "$log"
if [ -z "$summary" ]; then echo "no test summary found"; exit 1; fi
echo "$((total - failed)) passed, $failed failed"
exit "$rc"
