#!/usr/bin/env bash
# Run every fuzz target of the repository (found by grepping for
# `func Fuzz`) for FUZZTIME each, new inputs and all, not just the seed
# corpus that `go test` replays. -fuzzminimizetime bounds the minimisation
# of a failing input, which otherwise may take a minute of its own; the
# run still fails on the first crash. Each target must report executions,
# so a target that never really ran fails too.
# Run it with a go1.27+ toolchain (make fuzz sets GOTOOLCHAIN): go1.26's
# coordinator can report "context deadline exceeded" for a clean run
# (go.dev/issue/75804).
# Usage: scripts/fuzz.sh   (FUZZTIME=20s FUZZMINTIME=10s by default)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-20s}
FUZZMINTIME=${FUZZMINTIME:-10s}
GO=${GO:-go}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
n=0
while IFS=: read -r file name; do
	pkg=./$(dirname "$file")
	echo "== fuzz $pkg $name ($FUZZTIME)"
	# One target per run: go test -fuzz accepts a pattern matching one.
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" \
		-fuzzminimizetime "$FUZZMINTIME" "$pkg" >"$log" 2>&1; then
		cat "$log"
		echo "fuzz: $name in $pkg failed; the failing input is under $pkg/testdata/fuzz/$name/" >&2
		exit 1
	fi
	# The last progress line reads "fuzz: elapsed: 20s, execs: 123456 (...)".
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
	if [ -z "$execs" ] || [ "$execs" -eq 0 ]; then
		cat "$log"
		echo "fuzz: $name in $pkg reported no executions" >&2
		exit 1
	fi
	echo "ok   $name: $execs executions"
	n=$((n + 1))
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' internal cmd | sed 's/:func /:/' | sort)
if [ "$n" -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
echo "fuzz: $n targets ran for $FUZZTIME each"
