#!/usr/bin/env bash
# Installs what building, running and testing Tandem need on a Debian 12
# machine: Debian packages with apt-get, and a Go toolchain from the Go
# module proxy when the machine has none or one older than go.mod asks.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
	# the image: kernel modules, initramfs, disk image, and QEMU inside it
	kmod e2fsprogs zstd xz-utils cpio dpkg grub-efi-amd64-bin grub-common
	qemu-system-x86 qemu-utils ovmf ipxe-qemu seabios
	# tests and the virtual box: network namespaces, firewalls,
	# reachability, the site's DHCP server
	iproute2 iputils-ping nftables dnsmasq-base
	# real DHCP clients for the provisioning network's tests; the DHCP
	# benchmark's load generator (perfdhcp) and reference server (Kea)
	busybox isc-dhcp-client kea-admin kea-dhcp4-server
	# real TFTP clients (curl, busybox's, and atftp, which asks for windowsize)
	curl atftp
	# what new nodes boot and install: iPXE for PXE ROMs that are not
	# iPXE, GRUB for BIOS machines
	ipxe grub-pc-bin
	# the storage benchmark's client (fio with its nbd engine)
	fio
	# the web console's browser tests: Debian's chromium, and a font with
	# the Chinese characters of the console's translation
	chromium fonts-wqy-microhei
	# fetching Go when it is missing
	ca-certificates curl unzip
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -q
	$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Go: the version go.mod names, or newer.
want=$(awk '/^go /{print $2; exit}' go.mod)
have=""
if command -v go >/dev/null; then have=$(go env GOVERSION | sed 's/^go//'); fi
newer() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }
if [ -z "$have" ] || ! newer "$have" "$want"; then
	version=go1.26.8
	dest=/usr/local/lib/tandem-go
	echo "deps: fetching $version from the Go module proxy into $dest"
	proxy=$(echo "${GOPROXY:-https://proxy.golang.org}" | cut -d, -f1)
	tmp=$(mktemp -d)
	curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-$version.linux-amd64.zip"
	unzip -q "$tmp/go.zip" -d "$tmp"
	rm -rf "$dest"
	mv "$tmp/golang.org/toolchain@v0.0.1-$version.linux-amd64" "$dest"
	chmod +x "$dest"/bin/* "$dest"/pkg/tool/*/*
	ln -sf "$dest/bin/go" "$dest/bin/gofmt" /usr/local/bin/
	rm -rf "$tmp"
fi
go version

# The browser tests' driver, playwright-core, pinned in web/e2e's lock
# file; it needs Node.js 20 or later (the machine's own, with its npm).
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
	echo "deps: Node.js 20 or later is needed for the browser tests (found: $(node --version 2>/dev/null || echo none))" >&2
	exit 1
fi
if [ ! -f web/e2e/node_modules/playwright-core/package.json ]; then
	(cd web/e2e && npm ci --no-audit --no-fund --loglevel=error)
fi
