#!/usr/bin/env bash
# Kernel settings a loopback load run of 200k connections needs (run as root; the
# bench scripts call this). Each line says why. The same settings for a production
# node are in ops/sysctl-pilegate.conf.
# Not a setting, but a kernel write a bench script makes: bench/scale.sh writes 2 to
# /proc/sys/vm/drop_caches before each count, so the Slab figure it takes as kernel
# memory per pile holds sockets rather than dentries and inodes from earlier runs.
set -euo pipefail
w() { sysctl -q -w "$1=$2" || echo "warning: could not set $1 (not root?)"; }
# Client side: each 127.0.0.x source address gets the whole ephemeral port range.
w net.ipv4.ip_local_port_range "1024 65535"
# Accept queue depth: listen(2)'s backlog is capped by this; a reconnect storm fills it.
w net.core.somaxconn 65535
# Half-open connections waiting for the final ACK during a storm.
w net.ipv4.tcp_max_syn_backlog 65535
# Packets queued per CPU before the stack drops them (loopback bursts).
w net.core.netdev_max_backlog 65536
# TCP memory in pages (min, pressure, max): 400k loopback sockets need ~1.7 GB.
w net.ipv4.tcp_mem "786432 1048576 1572864"
# Reuse TIME_WAIT ports for new outgoing connections between runs.
w net.ipv4.tcp_tw_reuse 1
# Keep the ports the benches listen on out of the ephemeral range: with 1024-65535
# handed to 200k client sockets, a listener started right after a run could find its
# port taken by a client socket still closing (bind: Address already in use).
w net.ipv4.ip_local_reserved_ports "1883,6379,8883,9883,16379-16399,18880-18899,19880-19899"
