#!/usr/bin/env bash
# Build the Debian package: ops/package.sh [OUTDIR]  ->  OUTDIR/pilegate_<version>_amd64.deb
# The binary links the Swift runtime statically (--static-swift-stdlib), so the host
# needs no Swift toolchain; liburing, hiredis and OpenSSL come from Debian packages
# (Depends comes from the binary's own NEEDED libraries, by dpkg-shlibdeps).
# Install: apt install ./pilegate_<version>_amd64.deb   (ops/INSTALL.md)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-.build-package}")
maintainer="pilegate team <maintainers@users.noreply.r-seed-e9ca21be.example>"
version=$(sed -nE 's/^public let pilegateVersion = "(.*)"/\1/p' Sources/Gateway/Server.swift)
arch=$(dpkg --print-architecture)
swift build -c release --product pilegate --static-swift-stdlib --disable-local-rpath --build-path .build-static >&2
bin=.build-static/release/pilegate
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"

install -D -m 0755 "$bin" "$root/usr/bin/pilegate"
strip --strip-unneeded "$root/usr/bin/pilegate"
install -D -m 0644 ops/pilegate.service "$root/lib/systemd/system/pilegate.service"
install -D -m 0640 ops/pilegate.production.toml "$root/etc/pilegate/pilegate.toml"
install -D -m 0644 ops/sysctl-pilegate.conf "$root/etc/sysctl.d/60-pilegate.conf"
doc="$root/usr/share/doc/pilegate"
install -d "$doc" "$root/usr/share/pilegate/examples"
install -m 0644 README.md ops/*.md "$doc/"
install -m 0644 ops/debian/copyright "$doc/copyright"
install -D -m 0644 ops/debian/lintian-overrides "$root/usr/share/lintian/overrides/pilegate"
install -d "$root/usr/share/man/man1" && gzip -9n < ops/debian/pilegate.1 > "$root/usr/share/man/man1/pilegate.1.gz"
printf 'pilegate (%s) stable; urgency=medium\n\n  * Release %s, built from %s.\n\n -- %s  %s\n' \
    "$version" "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo source)" "$maintainer" "$(date -R)" \
    | gzip -9n > "$doc/changelog.gz"
cp -r ops/haproxy.cfg ops/prometheus ops/grafana ops/pilegate.example.toml "$root/usr/share/pilegate/"
install -m 0644 ops/examples/* "$root/usr/share/pilegate/examples/"
find "$root/usr/share" -type d -exec chmod 0755 {} + && find "$root/usr/share" -type f -exec chmod 0644 {} +

# Depends: the Debian packages (with versions) of the shared libraries the binary needs.
install -d "$root/DEBIAN" "$root/debian"
printf 'Source: pilegate\n\nPackage: pilegate\nArchitecture: any\n' > "$root/debian/control"
depends=$(cd "$root" && dpkg-shlibdeps -O usr/bin/pilegate | sed -n 's/^shlibs:Depends=//p')
rm -r "$root/debian"
cat > "$root/DEBIAN/control" <<CONTROL
Package: pilegate
Version: $version
Architecture: $arch
Maintainer: $maintainer
Section: net
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends, passwd
Recommends: redis-server (>= 5:6.2)
Suggests: haproxy, prometheus, mosquitto-clients
Description: MQTT 3.1.1 broker-edge for EV charging piles, on io_uring
 pilegate terminates up to 200,000 pile connections per node, authenticates
 each pile, enforces per-device topic ACLs and send-rate rules, and carries pile
 traffic to the platform's workers through Redis Streams (acknowledged only once
 stored), with commands back to the piles and Prometheus metrics.
CONTROL
echo /etc/pilegate/pilegate.toml > "$root/DEBIAN/conffiles"
echo /etc/sysctl.d/60-pilegate.conf >> "$root/DEBIAN/conffiles"
install -m 0755 ops/debian/postinst ops/debian/prerm ops/debian/postrm "$root/DEBIAN/"
mkdir -p "$out"
deb="$out/pilegate_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
