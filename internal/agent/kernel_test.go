package agent

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/kernel"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestKernelPathChosen: without being told, a session attaches the way the
// running kernel allows (uprobe_multi links where the kernel has them, one
// perf-event uprobe per site where it does not, as on Linux 6.1), says so
// exactly once when it falls back, and records the same exact call tree
// either way. The host runs the uprobe_multi path; the 6.1 guest of
// scripts/test-kernel.sh runs the fallback.
func TestKernelPathChosen(t *testing.T) {
	testutil.RequireRoot(t)
	multi := true
	for _, f := range kernel.Probe() {
		if f.Name == kernel.UprobeMulti {
			multi = !f.Missing()
		}
	}
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	var logs testutil.SyncBuffer
	opts := treeOptions(t)
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	res, err := Run(context.Background(), []string{bin}, nil, io.Discard, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	said := strings.Count(out, "kernel lacks uprobe_multi (Linux 6.6+): one perf-event uprobe per site")
	attached := "uprobe_multi=true"
	if !multi {
		attached = "uprobe_multi=false"
	}
	if wantSaid := map[bool]int{true: 0, false: 1}[multi]; said != wantSaid || !strings.Contains(out, attached) {
		t.Fatalf("kernel %s (uprobe_multi %v): fallback said %d times, want %d; want %q in the log:\n%s",
			kernel.Release(), multi, said, wantSaid, attached, out)
	}
	calls := readCalls(t, opts.DB)
	diffPaths(t, paths(t, calls), treePaths(""))
	checkResult(t, res, len(calls))
}
