package agent

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestControlUpdateAdds adds a target to a running agent of one target in
// place (Control.Update, as the daemon's reload does), while the first
// target's process calls a function back to back inside one open call.
// The first target's counts are exact (no window without probes), its
// session row is not ended by the add and none of its calls is a root;
// the added file's process is traced from then on under a session row of
// its own. A second add finds no reserved tracer left (ReloadTargets 1)
// and is refused with ErrNotInPlace, changing nothing; an added target
// can be removed again.
func TestControlUpdateAdds(t *testing.T) {
	testutil.RequireRoot(t)
	built := testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "phases-a"), filepath.Join(dir, "phases-b"), filepath.Join(dir, "phases-c")
	for _, p := range []string{a, b, c} {
		copyFile(t, built, p)
	}
	db := filepath.Join(dir, "obs.db")
	ctl := &Control{}
	ta := Target{Exe: a, Include: []string{"main.outer", "main.alpha"}}
	stop := backgroundSession(t, db, func(ctx context.Context, o Options) (*Result, error) {
		return AttachTargets(ctx, []Target{ta}, o)
	}, func(o *Options) { o.Control, o.FuncHeadroom, o.ReloadTargets = ctl, 2, 1 })

	p, in, say := servePhases(t, a)
	const steps = 3
	for range steps {
		say("step")
	}
	say("spin")

	opts := Options{SampleRate: 1}
	tb := Target{Exe: b, Include: []string{"main.beta"}}
	took, err := ctl.Update([]Target{ta, tb}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the add took %s", took)
	// The budget reserved one tracer: a second add has no room.
	tc := Target{Exe: c, Include: []string{"main.gamma"}}
	if _, err := ctl.Update([]Target{ta, tb, tc}, opts); !errors.Is(err, ErrNotInPlace) || !strings.Contains(err.Error(), "reload_targets") {
		t.Errorf("a second add with no reserved tracer left: %v, want ErrNotInPlace naming limits.reload_targets", err)
	}
	// While the add is in force: the first target's row is not ended.
	open := func() map[string]uint64 {
		t.Helper()
		ids := map[string]uint64{}
		for _, s := range sessions(t, db) {
			if s.End != 0 {
				t.Errorf("session %d of %s ended (%q) while its target runs", s.ID, s.Binary, s.ExitReason)
			}
			ids[s.Binary] = s.ID
		}
		return ids
	}
	ids := open()
	if len(ids) != 2 || ids[a] == 0 || ids[b] == 0 {
		t.Fatalf("session rows by binary %v, want one for %s and one for %s", ids, a, b)
	}

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
	// The added target can be removed again, in place.
	if _, err := ctl.Update([]Target{ta}, opts); err != nil {
		t.Errorf("remove the added target: %v", err)
	}
	pb2 := exec.Command(b, "2")
	if err := pb2.Run(); err != nil {
		t.Fatal(err)
	}
	res := stop()

	count := statCalls(t, db)
	if want := uint64(2*steps + spun); count["main.alpha"] != want || count["main.outer"] != 1 {
		t.Errorf("calls %v; want main.alpha exactly %d (%d spun across the add) and main.outer once", count, want, spun)
	}
	if count["main.beta"] != 4 || count["main.gamma"] != 0 {
		t.Errorf("calls %v; want main.beta 4 (the added target's process, none after its removal) and no main.gamma", count)
	}
	var served []record.Call
	var added int
	for _, cl := range readCalls(t, db) {
		switch {
		case cl.PID == uint32(pb.Process.Pid):
			if cl.ID>>40 != ids[b] {
				t.Errorf("%s call %d of the added target's process is not in its session %d", cl.Function, cl.ID, ids[b])
			}
			added++
		case cl.PID == uint32(pb2.Process.Pid):
			t.Errorf("a call after the added target was removed: %+v", cl)
		case cl.ID>>40 != ids[a]:
			t.Errorf("%s call %d of the first target is not in its session %d", cl.Function, cl.ID, ids[a])
		default:
			served = append(served, cl)
		}
	}
	checkUnderOuter(t, served)
	if res.Dropped == 0 && added != 4 {
		t.Errorf("%d calls stored of the added target's process, want 4", added)
	}
	reasons := map[string]string{}
	for _, r := range res.Targets {
		reasons[r.Exe] = r.ExitReason
	}
	if reasons[a] != "interrupted" || reasons[b] != ExitRemoved {
		t.Errorf("exit reasons %v; want %s interrupted, %s %q", reasons, a, b, ExitRemoved)
	}
}

// TestControlUpdateAddsCgroup adds a cgroup target to a running agent of
// one exe target in place: the Go program its process runs now is traced
// from the add on (in one reserved tracer), a program of another file its
// processes start later is found by its watch (in the second), a process
// of that file outside the cgroup is not traced, and the exe target goes
// on with its own session.
func TestControlUpdateAddsCgroup(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	dir := t.TempDir()
	exe, later := filepath.Join(dir, "procs-exe"), filepath.Join(dir, "procs-later")
	copyFile(t, bin, exe)
	copyFile(t, bin, later)
	cg := testCgroup(t)
	held := inCgroup(cg, bin, "wait", "40")
	in := startReady(t, held)

	db := filepath.Join(dir, "obs.db")
	ctl := &Control{}
	te := Target{Exe: exe}
	stop := backgroundSession(t, db, func(ctx context.Context, o Options) (*Result, error) {
		return AttachTargets(ctx, []Target{te}, o)
	}, func(o *Options) { o.Control, o.ReloadTargets = ctl, 2 })
	tc := Target{Cgroup: cg}
	if _, err := ctl.Update([]Target{te, tc}, Options{Include: []string{"main.tick"}, SampleRate: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := held.Wait(); err != nil {
		t.Fatal(err)
	}
	second := inCgroup(cg, later, "wait", "20")
	in2 := startReady(t, second)
	waitProcessRow(t, db, uint32(second.Process.Pid))
	if _, err := in2.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatal(err)
	}
	outside := runCount(t, later, 50)
	viaExe := runCount(t, exe, 10)
	res := stop()
	checkTicks(t, db, map[uint32]int{uint32(held.Process.Pid): 40, uint32(second.Process.Pid): 20, viaExe: 10})
	if got, _ := tickCounts(readCalls(t, db)); got[outside] != 0 {
		t.Errorf("a process outside the cgroup: %d calls, want none", got[outside])
	}
	if res.Recorded != 70 || len(res.Targets) != 3 {
		t.Errorf("recorded %d over %d targets; want 70 over 3 (the exe, the cgroup's two programs): %s", res.Recorded, len(res.Targets), res.Summary())
	}
}
