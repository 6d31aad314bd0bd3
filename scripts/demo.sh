#!/usr/bin/env bash
# Demo: trace the bundled testdata/calltree program from its first
# instruction, then show what obs-agent recorded. Needs root (BPF).
#   scripts/demo.sh [DB]
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-/tmp/obs-agent-demo.db}
AGENT=./bin/obs-agent

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: tracing needs root: run 'sudo make demo'" >&2
	exit 1
fi
[ -x "$AGENT" ] || go build -o "$AGENT" ./cmd/obs-agent

target=$(mktemp -d)/calltree
(cd testdata/calltree && go build -o "$target" .)
rm -f "$DB" "$DB-wal" "$DB-shm"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step "obs-agent run --db $DB -f 'main.*' -- calltree"
"$AGENT" run --db "$DB" -f 'main.*' -- "$target"

step "obs-agent query calls --db $DB --func 'main.nest' --since 0"
"$AGENT" query calls --db "$DB" --func 'main.nest' --since 0

step "obs-agent query errors --db $DB --since 0"
"$AGENT" query errors --db "$DB" --since 0

step "obs-agent query stats --db $DB --since 0"
"$AGENT" query stats --db "$DB" --since 0

root=$("$AGENT" query calls --db "$DB" --func 'main.spawn' --since 0 --format json | head -n1 | sed 's/.*"id":\([0-9]*\).*/\1/')
step "obs-agent query tree $root --db $DB   # main.spawn: goroutines it started are its children"
"$AGENT" query tree "$root" --db "$DB"

step "obs-agent retention status --db $DB"
"$AGENT" retention status --db "$DB"
