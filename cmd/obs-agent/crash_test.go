package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// countCalls reads how many calls the store holds, from a read-only
// connection beside the writer.
func countCalls(t *testing.T, db string) int {
	t.Helper()
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		return 0 // not created yet
	}
	defer st.Close()
	calls, err := st.Calls(context.Background(), store.Filter{})
	if err != nil {
		return 0
	}
	return len(calls)
}

// TestAgentKill9 kills the agent with SIGKILL while it writes heavily. The
// traced program must carry on unharmed (the kernel removes the probes with
// the agent's descriptors), the store must pass integrity_check, and every
// batch that was committed before the kill must still be there.
func TestAgentKill9(t *testing.T) {
	testutil.RequireRoot(t)
	calltree := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	dir := t.TempDir()
	agentBin := filepath.Join(dir, "obs-agent")
	if out, err := exec.Command("go", "build", "-o", agentBin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	db := filepath.Join(dir, "obs.db")

	// The agent starts the target, which runs the call tree 400 times
	// (about 100,000 calls) and shares the agent's stdout.
	var tout bytes.Buffer
	agent := exec.Command(agentBin, "run", "--db", db, "-f", "main.*", "--", calltree, "multi", "400")
	var aerr bytes.Buffer
	agent.Stdout = &tout
	agent.Stderr = &aerr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer agent.Process.Kill()

	// Wait (bounded) until several batches are committed.
	var committed int
	deadline := time.Now().Add(60 * time.Second)
	for committed < 20000 {
		if time.Now().After(deadline) {
			t.Fatalf("store never reached 20000 calls (%d); agent stderr:\n%s", committed, aerr.String())
		}
		time.Sleep(50 * time.Millisecond) // polling the store for a condition, not timing an event
		committed = countCalls(t, db)
	}
	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The target, reparented, runs on; Wait returns once it has closed
	// the stdout it shares with the agent, that is when it has exited.
	agent.Wait()
	if !strings.Contains(tout.String(), "multi done") {
		t.Fatalf("the target did not finish normally after the agent was killed; output %q", tout.String())
	}

	st, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer st.Close()
	if err := st.IntegrityCheck(context.Background()); err != nil {
		t.Fatalf("integrity_check after kill -9: %v", err)
	}
	calls, err := st.Calls(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < committed {
		t.Fatalf("store holds %d calls after kill -9, but %d were committed before it", len(calls), committed)
	}
	t.Logf("%d calls committed before kill -9, %d in the store after; integrity ok; target finished", committed, len(calls))
}
