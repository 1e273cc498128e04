#!/usr/bin/env bash
# Installs what pilegate needs to build, run and test on Debian bookworm.
# Idempotent: skips apt when every package is already there.
set -euo pipefail
pkgs=(liburing-dev libhiredis-dev libssl-dev openssl curl prometheus mosquitto mosquitto-clients redis-server python3-pip python3-matplotlib haproxy systemd)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# paho-mqtt drives the interop tests (PyPI; Debian's python may need --break-system-packages)
if ! python3 -c 'import paho.mqtt.client' 2>/dev/null; then
  python3 -m pip install -q paho-mqtt 2>/dev/null || python3 -m pip install -q --break-system-packages paho-mqtt
fi
command -v swift >/dev/null || { echo "swift 6.x must be on PATH (https://swift.org/install)"; exit 1; }
