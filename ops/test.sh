#!/usr/bin/env bash
# Install dependencies, then run every test: codec, loop, and integration tests
# that start the real pilegate binary and drive it with mosquitto-clients and paho.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh
swift build --build-tests
swift test --skip-build
