package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// TestDaemonReloadAddsTarget: a reload that adds a pid target to a daemon
// of one exe target, while the exe target's process calls main.alpha back
// to back inside one open call of main.outer, is applied in place. The
// first target's calls are counted exactly (no window without probes),
// every one has outer's call as parent (none became a root), and its
// session row is not ended by the reload; the added process is traced
// from then on under a session row of its own, which ends when it exits.
// A restart, the old way, fails each of these.
func TestDaemonReloadAddsTarget(t *testing.T) {
	testutil.RequireRoot(t)
	target, db, cfg, ready := daemonFiles(t)
	other := filepath.Join(filepath.Dir(db), "phases-b")
	copyProgram(t, target, other)
	write := func(extra string) {
		t.Helper()
		body := fmt.Sprintf("targets:\n  - exe: %s\n    include: ['main.outer', 'main.alpha']\n%sstore:\n  db: %s\nlimits:\n  sample_interval: 0s\n", target, extra, db)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	d, stderr := startDaemon(t, cfg, ready)
	waitFor(t, "generation 1", stderr, func() bool { return generationIs(ready, "1") })

	p := exec.Command(target, "serve")
	in, say := startServe(t, p)
	if l := say(""); l != "ready" {
		t.Fatalf("phases: %q", l)
	}
	const steps = 10
	for range steps {
		say("step")
	}
	// The process to add: it waits for a line before its calls.
	pb := exec.Command(other, "wait", "6")
	goB := startHeld(t, pb)
	if l := say("spin"); l != "spinning" {
		t.Fatalf("phases: %q", l)
	}
	write(fmt.Sprintf("  - pid: %d\n    include: ['main.beta']\n", pb.Process.Pid))
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "generation 2", stderr, func() bool { return generationIs(ready, "2") })
	var spun int
	if _, err := fmt.Sscanf(say("stop"), "spun %d", &spun); err != nil {
		t.Fatal(err)
	}
	for _, s := range sessionsOf(t, db) {
		if s.End != 0 {
			t.Errorf("session %d of %s ended (%q) by a reload that only adds a target", s.ID, s.Binary, s.ExitReason)
		}
	}
	for range steps {
		say("step")
	}
	if l := say("end"); l != "done" {
		t.Fatalf("phases: %q", l)
	}
	in.Close()
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(goB, "go\n")
	if err := pb.Wait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the added target ends with its process", stderr, func() bool {
		for _, s := range sessionsOf(t, db) {
			if s.PID == uint32(pb.Process.Pid) && s.End != 0 {
				return true
			}
		}
		return false
	})
	stopDaemon(t, d, stderr)
	log := stderr.String()
	for _, want := range []string{"targets updated in place", "target added by a reload"} {
		i := strings.Index(log, want)
		if i < 0 {
			t.Errorf("the log has no %q: the add was not applied in place:\n%s", want, log)
			continue
		}
		line := log[i:]
		t.Logf("%s", line[:strings.IndexByte(line, '\n')])
	}
	if strings.Contains(log, "targets switched") {
		t.Errorf("the targets were restarted:\n%s", log)
	}

	// Every call of the first process from the aggregates (a record the
	// store sink shed under load is counted there too).
	count, lost := statsOf(t, db, p.Process.Pid)
	t.Logf("calls %v (%d not stored, counted), %d rounds spun across the reload", count, lost, spun)
	if want := 2*steps + spun; count["main.alpha"] != want || count["main.outer"] != 1 {
		t.Errorf("the first target: calls %v; want main.alpha exactly %d (%d steps, %d spun across the reload) and main.outer once", count, want, 2*steps, spun)
	}
	checkUnderOuter(t, db, p.Process.Pid)
	if got := callsOf(t, db, pb.Process.Pid); fmt.Sprint(got) != fmt.Sprint(map[string]int{"main.beta": 6}) {
		t.Errorf("the added target's process: calls %v, want main.beta 6", got)
	}
	sessions := sessionsOf(t, db)
	if len(sessions) != 2 {
		t.Fatalf("%d session rows, want 2: the first target's, going on, and the added one's", len(sessions))
	}
	for _, s := range sessions {
		switch s.Binary {
		case target:
			if s.ExitReason != "interrupted" {
				t.Errorf("the first target's session ended %q, want interrupted (at SIGTERM)", s.ExitReason)
			}
		case other:
			if s.PID != uint32(pb.Process.Pid) || s.CallsRecorded != 6 || !strings.Contains(s.ExitReason, "exit") {
				t.Errorf("the added target's session: pid %d, %d calls recorded, exit %q; want pid %d, 6, its process's exit", s.PID, s.CallsRecorded, s.ExitReason, pb.Process.Pid)
			}
		default:
			t.Errorf("a session of %s", s.Binary)
		}
	}
}

// TestDaemonReloadAddNoRoom: a reload that adds more targets than the
// tracers reserved for them (limits.reload_targets 1, two added) cannot
// be applied in place: the log says why, and the daemon restarts the
// targets as before (the first session's row ends "replaced by a
// reload"), after which every target is traced.
func TestDaemonReloadAddNoRoom(t *testing.T) {
	testutil.RequireRoot(t)
	target, db, cfg, ready := daemonFiles(t)
	dir := filepath.Dir(db)
	b, c := filepath.Join(dir, "phases-b"), filepath.Join(dir, "phases-c")
	copyProgram(t, target, b, c)
	write := func(exes ...string) {
		t.Helper()
		body := "targets:\n"
		for _, e := range exes {
			body += fmt.Sprintf("  - exe: %s\n    include: ['main.alpha']\n", e)
		}
		body += fmt.Sprintf("store:\n  db: %s\nlimits:\n  sample_interval: 0s\n  reload_targets: 1\n", db)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(target)
	d, stderr := startDaemon(t, cfg, ready)
	waitFor(t, "generation 1", stderr, func() bool { return generationIs(ready, "1") })
	write(target, b, c)
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "generation 2", stderr, func() bool { return generationIs(ready, "2") })
	run := exec.Command(c, "3")
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", c, err, out)
	}
	stopDaemon(t, d, stderr)
	log := stderr.String()
	why := "2 targets added, and the memory budget has 1 tracers left of the 1 it reserved at start for targets a reload adds (limits.reload_targets)"
	if !strings.Contains(log, "the change cannot be applied in place; restarting the targets") || !strings.Contains(log, why) || !strings.Contains(log, "targets switched") {
		t.Errorf("the log does not say the add was restarted, and why (%q):\n%s", why, log)
	}
	if got := callsOf(t, db, run.Process.Pid); fmt.Sprint(got) != fmt.Sprint(map[string]int{"main.alpha": 3}) {
		t.Errorf("an added target's process after the restart: calls %v, want main.alpha 3", got)
	}
	reasons := map[string][]string{}
	for _, s := range sessionsOf(t, db) {
		reasons[s.Binary] = append(reasons[s.Binary], s.ExitReason)
	}
	want := map[string][]string{target: {"replaced by a reload", "interrupted"}, b: {"interrupted"}, c: {"interrupted"}}
	if fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Errorf("session exit reasons by binary %v, want %v", reasons, want)
	}
}
