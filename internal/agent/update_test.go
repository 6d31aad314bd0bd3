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

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestControlUpdate changes a running agent of two targets in place
// (Control.Update, as the daemon's reload does): one target's patterns
// change while its process calls a kept function back to back inside one
// open call, and the other target is removed. Every call of the kept
// function is stored once, with its parent; the added function is traced
// from the switch on, the removed one no longer; the removed target's
// session ends "removed by reload". A target added to an agent that
// reserved no tracer for it (ReloadTargets 0), and more new functions
// than the maps have room for, are refused with ErrNotInPlace, changing
// nothing.
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

	p, in, say := servePhases(t, a)
	const steps = 3
	for range steps {
		say("step")
	}
	say("spin")

	opts := Options{SampleRate: 1}
	if _, err := ctl.Update([]Target{ta, {Exe: filepath.Join(dir, "other"), Include: []string{"main.alpha"}}}, opts); !errors.Is(err, ErrNotInPlace) {
		t.Errorf("a target added with no tracer reserved: %v, want ErrNotInPlace", err)
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

	// Under load (the race detector) the store sink may shed ok records,
	// each counted: the aggregates count every call, the stored ones and
	// the lost ones, exactly.
	count := statCalls(t, db)
	if want := uint64(2*steps + spun); count["main.alpha"] != want || count["main.outer"] != 1 {
		t.Errorf("calls %v; want main.alpha exactly %d (%d spun across the update) and main.outer once", count, want, spun)
	}
	if n := count["main.gamma"]; n < steps || n > uint64(steps+spun) {
		t.Errorf("main.gamma, added: %d calls, want %d to %d", n, steps, steps+spun)
	}
	if n := count["main.beta"]; n < steps || n > uint64(steps+spun) {
		t.Errorf("main.beta, removed: %d calls, want %d to %d", n, steps, steps+spun)
	}
	if res.Dropped > 0 {
		t.Logf("%d records shed under load (counted)", res.Dropped)
	}
	// Every stored call has the one call of outer, open across the
	// update, as its parent.
	var served []record.Call
	for _, c := range readCalls(t, db) {
		if c.PID == uint32(pb.Process.Pid) {
			t.Errorf("a call of the removed target's process: %+v", c)
		}
		if c.PID == uint32(p.Process.Pid) {
			served = append(served, c)
		}
	}
	checkUnderOuter(t, served)
	reasons := map[string]string{}
	for _, r := range res.Targets {
		reasons[r.Exe] = r.ExitReason
	}
	if reasons[a] != "interrupted" || reasons[b] != ExitRemoved {
		t.Errorf("exit reasons %v; want %s interrupted, %s %q", reasons, a, b, ExitRemoved)
	}
}

// servePhases starts `phases serve` of bin and waits for it to be ready;
// say sends it a command (none for "") and returns its answer.
func servePhases(t *testing.T, bin string) (p *exec.Cmd, in io.WriteCloser, say func(string) string) {
	t.Helper()
	p = exec.Command(bin, "serve")
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
	say = func(cmd string) string {
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
	return p, in, say
}

// statCalls is the calls of each function in the store's aggregates:
// under load (the race detector) the store sink may shed ok records, each
// counted there, so they count every call exactly.
func statCalls(t *testing.T, db string) map[string]uint64 {
	t.Helper()
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := st.Stats(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]uint64{}
	for _, r := range rows {
		count[r.Function.Name] += r.Calls
	}
	return count
}

// checkUnderOuter wants calls, those of one `phases serve`, to have the one
// call of main.outer (open across a reload) as the parent of every other.
func checkUnderOuter(t *testing.T, calls []record.Call) {
	t.Helper()
	var parent uint64
	for _, c := range calls {
		switch {
		case c.Function == "main.outer":
			if parent != 0 && c.ID != parent {
				t.Errorf("main.outer's call %d, but its children's parent is %d", c.ID, parent)
			}
			parent = c.ID
		case c.ParentID == 0:
			t.Errorf("%s call %d is a root, want main.outer's call as its parent", c.Function, c.ID)
		case parent == 0:
			parent = c.ParentID
		case c.ParentID != parent:
			t.Errorf("%s call %d: parent %d, want %d, as every other call's", c.Function, c.ID, c.ParentID, parent)
		}
	}
	if parent == 0 {
		t.Error("no call has a parent")
	}
}
