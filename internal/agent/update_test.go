package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestControlUpdate changes a running agent of two targets in place
// (Control.Update, as the daemon's reload does): one target's patterns
// change while its process calls a kept function back to back inside one
// open call, and the other target is removed. Every call of the kept
// function is stored once, with its parent; the added function is traced
// from the switch on, the removed one no longer; the removed target's
// session ends "removed by reload". A target the agent does not run, and
// more new functions than the maps have room for, are refused with
// ErrNotInPlace, changing nothing.
func TestControlUpdate(t *testing.T) {
	testutil.RequireRoot(t)
	built := testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	dir := t.TempDir()
	a, b := filepath.Join(dir, "phases-a"), filepath.Join(dir, "phases-b")
	copyFile(t, built, a)
	copyFile(t, built, b)
	db := filepath.Join(dir, "obs.db")
	ctl := &Control{}
	ta := Target{Exe: a, Include: []string{"main.outer", "main.alpha", "main.beta"}}
	tb := Target{Exe: b, Include: []string{"main.alpha"}}
	stop := backgroundSession(t, db, func(ctx context.Context, o Options) (*Result, error) {
		return AttachTargets(ctx, []Target{ta, tb}, o)
	}, func(o *Options) { o.Control, o.FuncHeadroom = ctl, 2 })

	p := exec.Command(a, "serve")
	in, err := p.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := p.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Process.Kill(); p.Wait() })
	out := bufio.NewReader(pipe)
	say := func(cmd string) string {
		t.Helper()
		if cmd != "" {
			io.WriteString(in, cmd+"\n")
		}
		l, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("phases: %v", err)
		}
		return strings.TrimSpace(l)
	}
	say("") // ready
	const steps = 3
	for range steps {
		say("step")
	}
	say("spin")

	opts := Options{SampleRate: 1}
	if _, err := ctl.Update([]Target{ta, {Exe: filepath.Join(dir, "other"), Include: []string{"main.alpha"}}}, opts); !errors.Is(err, ErrNotInPlace) {
		t.Errorf("a target not running: %v, want ErrNotInPlace", err)
	}
	wide := ta
	wide.Include = []string{"main.*", "runtime.gc*"}
	if _, err := ctl.Update([]Target{wide, tb}, opts); !errors.Is(err, ErrNotInPlace) {
		t.Errorf("more new functions than the headroom: %v, want ErrNotInPlace", err)
	}
	ta2 := ta
	ta2.Include = []string{"main.outer", "main.alpha", "main.gamma"}
	took, err := ctl.Update([]Target{ta2}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("update took %s", took)
	var spun int
	if _, err := fmt.Sscanf(say("stop"), "spun %d", &spun); err != nil {
		t.Fatal(err)
	}
	for range steps {
		say("step")
	}
	say("end")
	in.Close()
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	pb := exec.Command(b, "4")
	if err := pb.Run(); err != nil {
		t.Fatal(err)
	}
	res := stop()

	count := map[string]int{}
	var outer uint64
	calls := readCalls(t, db)
	for _, c := range calls {
		if c.PID == uint32(pb.Process.Pid) {
			t.Errorf("a call of the removed target's process: %+v", c)
		}
		count[c.Function]++
		if c.Function == "main.outer" {
			outer = c.ID
		}
	}
	if want := 2*steps + spun; count["main.alpha"] != want || count["main.outer"] != 1 {
		t.Errorf("calls %v; want main.alpha exactly %d (%d spun across the update) and main.outer once", count, want, spun)
	}
	if n := count["main.gamma"]; n < steps || n > steps+spun {
		t.Errorf("main.gamma, added: %d calls, want %d to %d", n, steps, steps+spun)
	}
	if n := count["main.beta"]; n < steps || n > steps+spun {
		t.Errorf("main.beta, removed: %d calls, want %d to %d", n, steps, steps+spun)
	}
	for _, c := range calls {
		if c.Function != "main.outer" && c.ParentID != outer {
			t.Errorf("%s call %d: parent %d, want main.outer's %d", c.Function, c.ID, c.ParentID, outer)
			break
		}
	}
	reasons := map[string]string{}
	for _, r := range res.Targets {
		reasons[r.Exe] = r.ExitReason
	}
	if reasons[a] != "interrupted" || reasons[b] != ExitRemoved {
		t.Errorf("exit reasons %v; want %s interrupted, %s %q", reasons, a, b, ExitRemoved)
	}
}
