package agent

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/testutil"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// bpfLinks counts this process's open BPF link descriptors.
func bpfLinks(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if dst, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && dst == "anon_inode:bpf-link" {
			n++
		}
	}
	return n
}

// TestTargetExitsDuringAttach kills the target between symbol analysis and
// the attach: the agent must fail clearly and leave no link behind.
func TestTargetExitsDuringAttach(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	cmd, _, _ := startHeld(t, bin)
	before := bpfLinks(t)
	testHookBeforeAttach = func(int) {
		cmd.Process.Kill()
		cmd.Wait()
	}
	defer func() { testHookBeforeAttach = nil }()
	res, err := Attach(context.Background(), cmd.Process.Pid, testOptions(t))
	if !errors.Is(err, uprobe.ErrProcessGone) {
		t.Fatalf("want ErrProcessGone, got result %+v, err %v", res, err)
	}
	if !strings.Contains(err.Error(), "nothing was traced") {
		t.Errorf("error does not say what happened: %v", err)
	}
	if after := bpfLinks(t); after != before {
		t.Fatalf("%d BPF links left open after a failed attach", after-before)
	}
}

// TestAttachMissingPid names a pid with no process.
func TestAttachMissingPid(t *testing.T) {
	testutil.RequireRoot(t)
	_, err := Attach(context.Background(), 1<<30, testOptions(t))
	if !errors.Is(err, ErrNoProcess) || !strings.Contains(err.Error(), "is the program running") {
		t.Fatalf("want a clear no-such-process error, got %v", err)
	}
}

// TestDetachLeavesTargetRunning ends a session by --duration while the
// target is still waiting, then lets the target run: it must run normally
// and untraced, and the agent must have reported why it stopped.
func TestDetachLeavesTargetRunning(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	cmd, in, out := startHeld(t, bin)
	before := bpfLinks(t)
	opts := treeOptions(t)
	opts.Duration = 100 * time.Millisecond
	res, err := Attach(context.Background(), cmd.Process.Pid, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitReason != "duration elapsed" || res.Recorded != 0 {
		t.Fatalf("result %+v", res)
	}
	if after := bpfLinks(t); after != before {
		t.Fatalf("%d BPF links still open after the session", after-before)
	}
	in.Write([]byte("go\n"))
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "result 419") {
		t.Fatalf("target after detach: %v, output %q", err, out.String())
	}
	if n := len(readCalls(t, opts.DB)); n != 0 {
		t.Fatalf("%d calls recorded after the session ended", n)
	}
}
