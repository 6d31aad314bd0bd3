#!/usr/bin/env bash
# Build the unit tests for arm64 and run them under qemu-user (Debian's
# qemu-user-static): the symbol, selection, queue and store code must work
# on arm64 too. Probe tests need an arm64 kernel and are not run here
# (-short). Usage: scripts/test-arm64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
QEMU=${QEMU:-qemu-aarch64-static}
command -v "$QEMU" >/dev/null || { echo "test-arm64: $QEMU not found (apt-get install qemu-user-static)" >&2; exit 1; }
GOARCH=arm64 go build ./...
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
# internal/retention is left out: its crash tests re-execute the test binary,
# which qemu-user cannot do through /proc/self/exe.
for pkg in glob record selector symbols queue store uprobe; do
	GOARCH=arm64 go test -c -o "$out/$pkg.test" "./internal/$pkg"
	if (cd "internal/$pkg" && "$QEMU" "$out/$pkg.test" -test.short >"$out/$pkg.log" 2>&1); then
		echo "ok   arm64 internal/$pkg"
	else
		echo "FAIL arm64 internal/$pkg"
		tail -20 "$out/$pkg.log"
		failed=1
	fi
done
exit "$failed"
