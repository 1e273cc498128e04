#!/usr/bin/env bash
# Installs what pilegate needs to build, run and test on Debian bookworm.
# Idempotent: skips apt when every package is already there.
set -euo pipefail
# dpkg-dev and lintian build and check the Debian package (ops/package.sh); chromium
# and its driver run the console's browser test (with Selenium from PyPI), with a
# CJK font for its Chinese labels.
pkgs=(liburing-dev libhiredis-dev libssl-dev openssl curl prometheus mosquitto mosquitto-clients redis-server python3-pip python3-matplotlib haproxy systemd dpkg-dev lintian chromium chromium-driver fonts-wqy-microhei)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# From PyPI (Debian's python may need --break-system-packages): paho-mqtt drives the
# interop tests, redis-py the worker example (ops/examples/worker.py), Selenium the
# console's browser test.
for mod in paho.mqtt.client:paho-mqtt redis:redis selenium:selenium; do
  if ! python3 -c "import ${mod%%:*}" 2>/dev/null; then
    python3 -m pip install -q "${mod#*:}" 2>/dev/null || python3 -m pip install -q --break-system-packages "${mod#*:}"
  fi
done
command -v swift >/dev/null || { echo "swift 6.x must be on PATH (https://swift.org/install)"; exit 1; }
