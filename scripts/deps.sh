#!/usr/bin/env bash
# Install the Debian/Ubuntu packages obs-agent's build, tests and lint use:
# clang and llvm to regenerate the BPF objects (the committed ones need
# neither), libbpf headers, bpftool, shellcheck, clang-format, and vagrant
# for `vagrant validate`, qemu and cpio for `make test-kernel`, and Chromium's
# headless shell for the web UI's browser tests (make test-ui), and systemd
# and util-linux (unshare, nsenter) for TestSystemdUnit. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	ca-certificates git make gcc clang llvm libbpf-dev clang-format shellcheck \
	qemu-user-static qemu-system-x86 qemu-system-arm cpio chromium-headless-shell systemd util-linux "$@"
