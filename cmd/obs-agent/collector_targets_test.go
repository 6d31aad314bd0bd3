package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/obs-agent/obs-agent/internal/otlp/otlptest"
	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestCollectorTargets traces two programs with `attach --exe A --exe B
// --otlp-endpoint` pointing at a real collector on loopback: one agent,
// one OTLP sink for both. Every recorded call arrives once as a span with
// the right parent (across goroutines too), trace, status and error text,
// and the resource of its own program and process; the exit line counts
// every span as sent, for the agent and for each target.
func TestCollectorTargets(t *testing.T) {
	testutil.RequireRoot(t)
	col := collectorBinary(t)
	procs := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	calltree := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	dir := t.TempDir()
	a := filepath.Join(dir, "procs")
	copyProgram(t, procs, a)
	db := filepath.Join(dir, "obs.db")
	port := freePort(t)
	live := filepath.Join(dir, "live.json")
	c := startCollector(t, col, port, live)

	agent, stderr := startAttachArgs(t, db, "--exe", a, "--exe", calltree, "-f", "main.*",
		"--otlp-endpoint", fmt.Sprintf("http://127.0.0.1:%d", port))
	for _, args := range [][]string{{a, "count", "40"}, {calltree}, {a, "count", "25"}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	if err := agent.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := agent.Wait(); err != nil {
		t.Fatalf("attach: %v\n%s", err, stderr.String())
	}
	c.stop(t)
	spans := readCollector(t, live)

	st, calls, sessions := otlptest.ReadStore(t, db)
	if len(sessions) != 2 || len(calls) < 200 {
		t.Fatalf("%d sessions, %d calls; want 2 sessions, calltree's calls and more", len(sessions), len(calls))
	}
	got := spans.Check(t, calls, false)
	otlptest.CheckTrees(t, calls, got, query.New(st).Tree, 6) // calltree spawns 6 goroutines under traced calls
	spans.CheckProcesses(t, calls, sessions)
	acct := parseOTLPAccount(t, stderr.String())
	if acct.sent != len(calls) || acct.lost != 0 {
		t.Errorf("exit line: %+v; want %d sent, none lost", acct, len(calls))
	}
	if n := strings.Count(stderr.String(), "otlp sink: sent"); n != 3 {
		t.Errorf("the exit line has %d OTLP sink lines, want the agent's and one per target (3):\n%s", n, stderr.String())
	}
	t.Logf("%d spans from %d sessions", len(got), len(sessions))
}
