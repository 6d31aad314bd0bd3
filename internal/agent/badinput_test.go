package agent

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

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
