package agent

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestKilledAgentRowClosedByNextRun: an agent killed with SIGKILL leaves
// its session row without an end. A run on the same store while that
// agent still lives leaves its row open; the first run after it died
// closes it with the reason "agent killed" and the end of the last call
// it stored.
func TestKilledAgentRowClosedByNextRun(t *testing.T) {
	testutil.RequireRoot(t)
	agentBin := agentBinary(t)
	load := testutil.BuildProgram(t, testutil.Build{Program: "load"})
	db := filepath.Join(t.TempDir(), "obs.db")

	agent := exec.Command(agentBin, "run", "--db", db, "-f", "main.work", "--sample-interval", "0", "--", load, "rate", "200", "120")
	la := startLoggedAgent(t, agent)
	targetPID := la.targetPID
	if targetPID == 0 {
		t.Fatalf("the agent never attached:\n%s", la.wait())
	}
	defer syscall.Kill(targetPID, syscall.SIGKILL)

	// Wait until the agent has stored calls: the store is polled, as a
	// reader would, until they are there.
	ctx := context.Background()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if n := countCalls(t, db); n > 0 {
			break
		}
	}

	// A run while the first agent lives must leave its row open.
	second, err := exec.Command(agentBin, "run", "--db", db, "-f", "main.work", "--", load, "rate", "10", "0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, second)
	}
	if ss := sessions(t, db); ss[0].End != 0 {
		t.Fatalf("a run closed the row of a live agent: %+v\n%s", ss[0], second)
	}

	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The target shares the agent's stderr: it must go too for the
	// agent's log to end.
	syscall.Kill(targetPID, syscall.SIGKILL)
	la.wait()

	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	calls, err := st.Calls(ctx, store.Filter{})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	var n int
	for i := range calls {
		if calls[i].ID>>40 == 1 {
			last = max(last, calls[i].Start+calls[i].Duration)
			n++
		}
	}

	third, err := exec.Command(agentBin, "run", "--db", db, "-f", "main.work", "--", load, "rate", "10", "0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("third run: %v\n%s", err, third)
	}
	if !strings.Contains(string(third), `msg="closed the session row of an agent that was killed`) {
		t.Errorf("the next run did not say it closed the killed agent's row:\n%s", third)
	}
	ss := sessions(t, db)
	if len(ss) != 3 {
		t.Fatalf("%d sessions, want 3", len(ss))
	}
	if ss[0].ExitReason != "agent killed" || ss[0].End != last {
		t.Errorf("killed session row: end %d, reason %q; want the end of its last stored call %d (of %d), %q", ss[0].End, ss[0].ExitReason, last, n, "agent killed")
	}
	for _, s := range ss[1:] {
		if s.End == 0 || s.ExitReason != "target exited with code 0" {
			t.Errorf("session %d: end %d, reason %q", s.ID, s.End, s.ExitReason)
		}
	}
}

func countCalls(t *testing.T, db string) int {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		return 0 // not created yet
	}
	defer st.Close()
	calls, err := st.Calls(ctx, store.Filter{Limit: 1})
	if err != nil {
		return 0
	}
	return len(calls)
}

func sessions(t *testing.T, db string) []record.Session {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ss, err := st.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}
