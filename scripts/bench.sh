#!/usr/bin/env bash
# Benchmark table: runs the project's benchmarks once, on this machine, and
# prints one table of the figures (figure, value, what it is).
#   scripts/bench.sh            (as root: the probe benchmarks attach real uprobes)
# Raw `go test -bench` output is kept in a temporary directory, whose path is
# printed at the end. Takes about a minute on the 2-core dev VM.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
GO=${GO:-go}

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: the probe benchmarks attach real uprobes and need root: run 'sudo make bench'" >&2
	exit 1
fi

raw=$(mktemp -d /tmp/obs-agent-bench.XXXXXX)
failed=()

# bench NAME PKG REGEXP BENCHTIME: run one benchmark into $raw/NAME.txt.
bench() {
	local name=$1 pkg=$2 re=$3 benchtime=$4
	printf 'bench: %-10s %s -bench %s -benchtime %s\n' "$name" "$pkg" "$re" "$benchtime" >&2
	if ! "$GO" test -count=1 -run '^$' -bench "$re" -benchtime "$benchtime" -timeout 10m "$pkg" >"$raw/$name.txt" 2>&1; then
		failed+=("$name")
		echo "bench: $name failed; see $raw/$name.txt" >&2
		tail -n 20 "$raw/$name.txt" >&2
	fi
}

# metric NAME BENCH UNIT: the value reported for UNIT on the result line of
# BENCH (a prefix of the benchmark's name, e.g. BenchmarkX/sub), or n/a.
metric() {
	awk -v b="$2" -v u="$3" '
		index($1, b) == 1 {
			for (i = 3; i < NF; i += 2) {
				if ($(i + 1) == u) { v = $i }
			}
		}
		END { print (v == "" ? "n/a" : v) }
	' "$raw/$1.txt" 2>/dev/null || echo n/a
}

# fmtnum VALUE DECIMALS: round a number, keep n/a.
fmtnum() {
	if [ "$1" = n/a ]; then
		echo n/a
	else
		awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f\n", d, v }'
	fi
}

start=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

bench overhead ./internal/agent/ 'BenchmarkOverhead$' 1x
bench bpfcost ./internal/uprobe/ 'BenchmarkBPFCost$' 3x
bench store ./internal/store/ 'BenchmarkWriteCalls$' 400000x
bench attach ./internal/uprobe/ 'BenchmarkAttachDetach5000/multi-5000$' 3x
bench cost ./internal/agent/ 'BenchmarkAgentCost$' 3x
bench retention ./internal/retention/ 'BenchmarkDropStall$' 1x

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - start))

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
printf '\nmachine: %s cores, %s, kernel %s, %s\n' "$(nproc)" "${cpu:-unknown CPU}" "$(uname -r)" "$(date -u '+%Y-%m-%d %H:%M UTC')"
printf 'load average before %s, after %s; benchmarks took %ds\n\n' "$load_before" "$load_after" "$elapsed"

row() { printf '%-28s %12s  %s\n' "$1" "$2" "$3"; }
row figure value "what it is"
row "------" "-----" "----------"
row "untraced ns/call" "$(fmtnum "$(metric overhead BenchmarkOverhead untraced-ns/call)" 1)" "single-thread hot loop, no probes (fastest of 7 interleaved rounds)"
row "floor ns/call" "$(fmtnum "$(metric overhead BenchmarkOverhead floor-ns/call)" 0)" "same sites, empty BPF programs: the uprobe trap cost"
row "traced ns/call" "$(fmtnum "$(metric overhead BenchmarkOverhead traced-ns/call)" 0)" "same sites, real programs, every call recorded"
row "overhead/floor" "$(fmtnum "$(metric overhead BenchmarkOverhead overhead/floor)" 2)" "(traced-untraced)/(floor-untraced); target 1.10"
row "BPF ns/call, 1 goroutine" "$(fmtnum "$(metric bpfcost BenchmarkBPFCost/hot-1g bpf-ns/call)" 0)" "all BPF programs' run time per traced call, kernel BPF stats (calltree hot loop, median of 3)"
row "BPF ns/call, 2 goroutines" "$(fmtnum "$(metric bpfcost BenchmarkBPFCost/work-2g bpf-ns/call)" 0)" "same, load's flood of main.work (error result) from 2 goroutines"
row "empty BPF ns/call" "$(fmtnum "$(metric bpfcost BenchmarkBPFCost/hot-1g empty-bpf-ns/call)" 0)" "same sites, empty programs: what the statistics themselves add"
row "traced calls lost" "$(metric overhead BenchmarkOverhead lost)" "calls not recorded in the traced runs (want 0)"
row "store records/s" "$(fmtnum "$(metric store BenchmarkWriteCalls records/s)" 0)" "WriteCalls, 5,000-record batches, wall clock"
row "store records/cpu-s" "$(fmtnum "$(metric store BenchmarkWriteCalls records/cpu-s)" 0)" "same, per CPU second of the writer process"
row "attach ms, 5000 sites" "$(fmtnum "$(metric attach BenchmarkAttachDetach5000/multi-5000 attach-ms)" 1)" "uprobe_multi links, mean of 3"
row "detach ms, 5000 sites" "$(fmtnum "$(metric attach BenchmarkAttachDetach5000/multi-5000 detach-ms)" 1)" "uprobe_multi links, mean of 3"
row "agent CPU % (steady)" "$(fmtnum "$(metric cost BenchmarkAgentCost agent-cpu-%)" 1)" "obs-agent's own CPU, % of one core, at $(metric cost BenchmarkAgentCost calls/s) calls/s (load rate, 5 s; mean of 3)"
row "agent CPU % (session)" "$(fmtnum "$(metric cost BenchmarkAgentCost agent-session-cpu-%)" 1)" "same runs, whole session incl. startup and final flush"
row "agent CPU us/call" "$(fmtnum "$(metric cost BenchmarkAgentCost agent-cpu-us/call)" 2)" "same runs: session CPU / calls made"
row "agent peak RSS MiB" "$(fmtnum "$(metric cost BenchmarkAgentCost agent-peak-rss-MiB)" 1)" "same runs: obs-agent's own VmHWM (includes ~48 MiB of mmapped BPF rings)"
row "agent peak anon MiB" "$(fmtnum "$(metric cost BenchmarkAgentCost agent-peak-anon-MiB)" 1)" "same runs: largest RssAnon seen (heap, stacks)"
row "retention stall ms" "$(fmtnum "$(metric retention BenchmarkDropStall stall-ms)" 1)" "writer delay while a 1M-call hour is verified against its archive and dropped"
row "retention drop ms" "$(fmtnum "$(metric retention BenchmarkDropStall drop-ms)" 1)" "the verified drop: the hour's fingerprint on a read snapshot, then the DROP transaction"
row "archive max batch ms" "$(fmtnum "$(metric retention BenchmarkDropStall archive-max-ms)" 1)" "worst 5,000-call batch during the hour's archive copy"
row "batch median ms" "$(fmtnum "$(metric retention BenchmarkDropStall batch-median-ms)" 1)" "5,000-call batch, no retention running"

printf '\nraw output: %s\n' "$raw"
if [ "${#failed[@]}" -gt 0 ]; then
	echo "bench: failed: ${failed[*]}" >&2
	exit 1
fi
