#!/usr/bin/env bash
# Fresh machine to running gateway: install dependencies, build release, start
# pilegate on its embedded defaults (0.0.0.0:1883). Extra arguments go to pilegate,
# e.g. ops/run.sh --config ops/pilegate.example.toml
set -euo pipefail
cd "$(dirname "$0")/.."
ops/install-deps.sh
swift build -c release --product pilegate
exec .build/release/pilegate "$@"
