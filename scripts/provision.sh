#!/usr/bin/env bash
# Provision the obs-agent development VM (see Vagrantfile): install the BPF
# toolchain and Go, build obs-agent from /vagrant with `make build`, then run
# `make demo`. Vagrant runs it as root. It is idempotent, so
# `vagrant provision` rebuilds and reruns the demo.
#
# Environment:
#   GO_VERSION  Go release to install (default 1.26.8)
#   SRC         source tree (default /vagrant)
#   SKIP_DEMO   set to 1 to stop after the build
set -euo pipefail

GO_VERSION=${GO_VERSION:-1.26.8}
SRC=${SRC:-/vagrant}
SKIP_DEMO=${SKIP_DEMO:-0}
GOROOT_DIR=/usr/local/go

log() { printf '==> %s\n' "$*"; }
die() { printf 'provision: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (vagrant provisions as root)"

install_packages() {
	log "installing apt packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends \
		ca-certificates curl git make clang llvm libbpf-dev
}

install_go() {
	local have="" arch tarball url tmp
	if [ -x "$GOROOT_DIR/bin/go" ]; then
		have=$("$GOROOT_DIR/bin/go" env GOVERSION)
	fi
	if [ "$have" = "go$GO_VERSION" ]; then
		log "go$GO_VERSION already installed"
		return
	fi
	arch=$(dpkg --print-architecture) # amd64 or arm64, as Go names them
	tarball="go$GO_VERSION.linux-$arch.tar.gz"
	url="https://dl.google.com/go/$tarball" # where go.dev/dl points
	log "installing go$GO_VERSION ($arch) from go.dev/dl"
	tmp=$(mktemp -d)
	curl -fsSL --retry 3 -o "$tmp/$tarball" "$url"
	curl -fsSL --retry 3 -o "$tmp/$tarball.sha256" "$url.sha256"
	echo "$(cat "$tmp/$tarball.sha256")  $tmp/$tarball" | sha256sum -c --quiet - ||
		die "checksum mismatch for $tarball"
	rm -rf "$GOROOT_DIR"
	tar -C /usr/local -xzf "$tmp/$tarball"
	rm -rf "$tmp"
	cat >/etc/profile.d/go.sh <<'PROFILE'
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
PROFILE
}

# `sudo` resets PATH to secure_path and `vagrant ssh -c` reads no profile:
# put go and gofmt where both look.
link_go() {
	ln -sf "$GOROOT_DIR/bin/go" /usr/local/bin/go
	ln -sf "$GOROOT_DIR/bin/gofmt" /usr/local/bin/gofmt
}

build_and_demo() {
	export PATH="$GOROOT_DIR/bin:$PATH"
	# The synced folder belongs to another user than root, so git would
	# refuse to report VCS status to `go build`.
	export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
	[ -f "$SRC/Makefile" ] || die "no Makefile in $SRC: is the repository synced to $SRC?"
	log "building obs-agent in $SRC"
	make -C "$SRC" build
	if [ "$SKIP_DEMO" = 1 ]; then
		log "SKIP_DEMO=1: not running the demo"
		return
	fi
	log "running the demo"
	make -C "$SRC" demo
}

install_packages
install_go
link_go
build_and_demo
log "done: uname -r = $(uname -r); try 'cd /vagrant && sudo ./bin/obs-agent version'"
