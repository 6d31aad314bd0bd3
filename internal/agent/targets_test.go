package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// targetsSession runs AttachTargets in the background; it returns once
// every probe is live, and stop ends it as Ctrl-C would.
func targetsSession(t *testing.T, targets []Target, db string) (stop func() *Result) {
	t.Helper()
	return backgroundSession(t, db, func(ctx context.Context, o Options) (*Result, error) {
		return AttachTargets(ctx, targets, o)
	})
}

// nsScript runs in a new pid and mount namespace (unshare --pid --fork
// --mount-proc --propagation private): it mounts a private tmpfs on $1
// (empty on the host), copies the program $2 there as app, so that its
// binary exists only in this mount namespace, then runs `app wait $3`
// and, once that exited, `app count $4` (by exec: a second process of the
// file, under the shell's pid).
const nsScript = `mount -t tmpfs none "$1" && cp "$2" "$1/app" && "$1/app" wait "$3" && exec "$1/app" count "$4"`

// startInNamespace starts nsScript and returns the host pid of its first
// process of app (ready, waiting for a line on stdin) and its stdin.
func startInNamespace(t *testing.T, bin, ctr string, first, second int) (*exec.Cmd, io.WriteCloser, int) {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--propagation", "private",
		"sh", "-c", nsScript, "sh", ctr, bin, strconv.Itoa(first), strconv.Itoa(second))
	cmd.Stderr = os.Stderr
	in := startReady(t, cmd)
	// app printed "ready": it runs. It is unshare's grandchild (unshare
	// forks the shell, the shell starts app).
	pid := 0
	for _, sh := range children(cmd.Process.Pid) {
		for _, c := range children(sh) {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); err == nil && strings.Contains(string(b), "wait") {
				pid = c
			}
		}
	}
	if pid == 0 {
		t.Fatalf("no app process under unshare (pid %d)", cmd.Process.Pid)
	}
	if _, err := os.Stat(filepath.Join(ctr, "app")); !os.IsNotExist(err) {
		t.Fatalf("%s/app exists on the host (%v): the test needs a binary only the namespace has", ctr, err)
	}
	return cmd, in, pid
}

// ctrDirs are a test directory and, in it, an empty directory ctr that
// nsScript mounts its tmpfs on.
func ctrDirs(t *testing.T) (dir, ctr string) {
	t.Helper()
	dir = t.TempDir()
	ctr = filepath.Join(dir, "ctr")
	if err := os.Mkdir(ctr, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, ctr
}

// children lists the child processes of pid.
func children(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// checkTicks asserts the exact main.tick calls (n/10 of them errors) of
// every pid in want, by its calls and by its stored aggregates, that no
// other pid recorded any, and returns the process rows by pid.
func checkTicks(t *testing.T, db string, want map[uint32]int) map[uint32]store.Process {
	t.Helper()
	got, errs := tickCounts(readCalls(t, db))
	for pid, n := range want {
		if got[pid] != n || errs[pid] != n/10 {
			t.Errorf("pid %d: %d calls, %d errors recorded; want %d, %d", pid, got[pid], errs[pid], n, n/10)
		}
	}
	for pid, n := range got {
		if _, ok := want[pid]; !ok {
			t.Errorf("pid %d is no target's process, yet %d of its calls were recorded", pid, n)
		}
	}
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	for pid, n := range want {
		stats, err := st.Stats(ctx, store.Filter{PID: pid})
		if err != nil {
			t.Fatal(err)
		}
		var sc, se, sr uint64
		for _, s := range stats {
			if s.Function.Name == "main.tick" {
				sc, se, sr = sc+s.Calls, se+s.Errors, sr+s.Recorded
			}
		}
		if sc != uint64(n) || se != uint64(n/10) || sr != uint64(n) {
			t.Errorf("pid %d: stats say %d calls, %d errors, %d recorded; want %d, %d, %d", pid, sc, se, sr, n, n/10, n)
		}
	}
	procs, err := st.Processes(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[uint32]store.Process{}
	for _, p := range procs {
		rows[p.PID] = p
	}
	if len(rows) != len(want) {
		t.Errorf("%d process rows, want %d: %+v", len(rows), len(want), procs)
	}
	return rows
}

// TestTargetsMixed traces two binaries by two --exe and a third by --pid
// in one agent: the --pid target runs in its own pid and mount namespace,
// from a binary that exists only there. Every process's calls are stored
// under its host pid with exact counts, the namespaced process keeps its
// ns pid, `query processes` has a row for each, and each target has its
// own session row.
func TestTargetsMixed(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a", "procs"), filepath.Join(dir, "b", "procs"), filepath.Join(dir, "c", "procs")
	for _, p := range []string{a, b, c} {
		copyFile(t, bin, p)
	}
	ctr := filepath.Join(dir, "ctr")
	if err := os.Mkdir(ctr, 0o755); err != nil {
		t.Fatal(err)
	}
	ns, in, nsPid := startInNamespace(t, c, ctr, 40, 0)
	nsExe := filepath.Join(ctr, "app")

	db := filepath.Join(dir, "obs.db")
	stop := targetsSession(t, []Target{{Exe: a}, {Exe: b}, {PID: nsPid}}, db)
	want := map[uint32]int{}
	for _, r := range []struct {
		bin string
		n   int
	}{{a, 100}, {b, 70}, {a, 50}, {c, 33}} { // c's own file, on the host: not a target
		pid := runCount(t, r.bin, r.n)
		if r.bin != c {
			want[pid] = r.n
		}
	}
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	// The namespaced shell then execs a second process of its copy (count
	// 0, under the shell's pid): not the --pid target.
	if err := ns.Wait(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	want[uint32(nsPid)] = 40
	res := stop()

	rows := checkTicks(t, db, want)
	if r := rows[uint32(nsPid)]; r.NSPID == 0 || r.NSPID == r.PID || !strings.HasPrefix(r.ExitReason, "target exited") {
		t.Errorf("--pid target's row %+v: want its ns pid and that it exited", r)
	}
	// Named as its own mount namespace names it (/proc/PID/exe's link),
	// not by the /proc path the agent opened it through.
	if r := rows[uint32(nsPid)]; r.Binary != nsExe {
		t.Errorf("--pid target's row names binary %q, want %q", r.Binary, nsExe)
	}
	for pid, r := range rows {
		if pid != uint32(nsPid) && (r.Binary != a && r.Binary != b || r.ExitReason != "exited") {
			t.Errorf("row %+v: want binary %s or %s, exited", r, a, b)
		}
	}
	if len(res.Targets) != 3 || res.Recorded != 260 || res.Lost() != 0 || res.Processes != 4 || res.Calls != 260 {
		t.Errorf("result: %d targets, %d processes, %d calls, %d recorded, %d lost; want 3, 4, 260, 260, 0\n%s",
			len(res.Targets), res.Processes, res.Calls, res.Recorded, res.Lost(), res.Summary())
	}
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sessions, err := st.Sessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uint64]bool{}
	for _, s := range sessions {
		ids[s.ID] = true
		if s.End == 0 {
			t.Errorf("session %d has no end", s.ID)
		}
	}
	for _, r := range rows {
		if !ids[r.Session] {
			t.Errorf("process row %+v names no session", r)
		}
	}
	if len(sessions) != 3 {
		t.Errorf("%d session rows, want one per target (3)", len(sessions))
	}
	t.Log(res.Summary())
}

// TestAttachInMountNamespace attaches by --pid to a process in its own pid
// and mount namespace whose binary exists only there: it is read and
// probed through /proc/PID/exe, its calls are stored under its host pid,
// and its row keeps its ns pid.
func TestAttachInMountNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	dir, ctr := ctrDirs(t)
	ns, in, pid := startInNamespace(t, bin, ctr, 60, 0)
	db := filepath.Join(dir, "obs.db")
	opts := Options{Include: []string{"main.tick"}, DB: db, SampleRate: 1, SampleInterval: -1,
		OnReady: func(int) { in.Write([]byte("go\n")) }}
	res, err := Attach(context.Background(), pid, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Wait(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	rows := checkTicks(t, db, map[uint32]int{uint32(pid): 60})
	if r := rows[uint32(pid)]; r.NSPID == 0 || r.NSPID == r.PID {
		t.Errorf("row %+v: want its ns pid", r)
	}
	if res.Recorded != 60 {
		t.Errorf("recorded %d, want 60: %s", res.Recorded, res.Summary())
	}
}

// TestExeInMountNamespace traces by --exe a binary that exists only in a
// container's mount namespace, through /proc/PID/root: two processes of
// it start there (the second by the shell's exec), and both are traced
// under their host pids.
func TestExeInMountNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	dir, ctr := ctrDirs(t)
	ns, in, pid := startInNamespace(t, bin, ctr, 20, 30)
	shell := 0
	for _, sh := range children(ns.Process.Pid) {
		shell = sh
	}
	db := filepath.Join(dir, "obs.db")
	exe := fmt.Sprintf("/proc/%d/root%s/app", pid, ctr)
	stop := exeSession(t, exe, db)
	// The waiting process is found by the follower's scan of /proc; the
	// second lives a few milliseconds and may be found only through its
	// calls, after it exited, when its ns pid can no longer be read.
	waitProcessRow(t, db, uint32(pid))
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := ns.Wait(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	stop()
	rows := checkTicks(t, db, map[uint32]int{uint32(pid): 20, uint32(shell): 30})
	for p, r := range rows {
		if r.Binary != exe || r.ExitReason != "exited" {
			t.Errorf("pid %d: row %+v; want binary %s, exited", p, r, exe)
		}
	}
	if r := rows[uint32(pid)]; r.NSPID == 0 || r.NSPID == r.PID {
		t.Errorf("row %+v: want its ns pid", r)
	}
}

// waitProcessRow waits until the store has a process row for pid (a
// condition with a deadline, not a fixed sleep; the deadline is generous
// because a new program of a cgroup is read and attached first, which
// takes many seconds under -race on a loaded machine).
func waitProcessRow(t *testing.T, db string, pid uint32) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if st, err := store.Open(db, store.Options{ReadOnly: true}); err == nil {
			ps, _ := st.Processes(context.Background(), pid)
			st.Close()
			if len(ps) > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process row for pid %d within 90 s", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTargetsRefused: a process is never traced twice, and what several
// targets cannot do yet is refused before anything is attached.
func TestTargetsRefused(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	cmd := exec.Command(bin, "wait", "1")
	in := startReady(t, cmd)
	defer in.Close()
	other := filepath.Join(t.TempDir(), "procs")
	copyFile(t, bin, other)
	db := filepath.Join(t.TempDir(), "obs.db")
	opts := Options{Include: []string{"main.tick"}, DB: db}
	for _, c := range []struct {
		targets []Target
		want    string
	}{
		{[]Target{{Exe: bin}, {Exe: bin}}, "trace the same executable file"},
		{[]Target{{Exe: bin}, {PID: cmd.Process.Pid}}, "trace the same executable file"},
		{[]Target{{PID: cmd.Process.Pid}, {PID: cmd.Process.Pid}}, "given twice"},
		{[]Target{{Exe: bin, PID: 1}}, "exactly one of"},
		{nil, "no target"},
	} {
		_, err := AttachTargets(context.Background(), c.targets, opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v; want %q", c.targets, err, c.want)
		}
	}
	// An OTLP sink that cannot be made (no endpoint) is refused before
	// the store is created.
	opts.OTLP = &OTLPOptions{}
	if _, err := AttachTargets(context.Background(), []Target{{Exe: bin}, {Exe: other}}, opts); err == nil || !strings.Contains(err.Error(), "endpoint") {
		t.Errorf("two files with an OTLP sink without an endpoint: error %v; want a refusal", err)
	}
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Errorf("the store was created (%v): refusals must come before anything is opened", err)
	}
}

// testCgroup makes a cgroup v2 for the test under the first cgroup2 mount
// (on a hybrid host, beside the v1 controllers), removed at the end.
func testCgroup(t *testing.T) string {
	t.Helper()
	ms := cgroup2Mounts()
	if len(ms) == 0 {
		t.Skip("no cgroup2 file system is mounted on this host")
	}
	dir, err := os.MkdirTemp(ms[0], "obs-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Children first; the test's processes have been reaped.
		subs, _ := filepath.Glob(filepath.Join(dir, "*", "cgroup.procs"))
		for _, s := range subs {
			os.Remove(filepath.Dir(s))
		}
		if err := os.Remove(dir); err != nil {
			t.Logf("remove cgroup %s: %v", dir, err)
		}
	})
	return dir
}

// inCgroup is a command that moves its shell into cgroup dir, then execs
// argv: the program runs in the cgroup from its first instruction.
func inCgroup(dir string, argv ...string) *exec.Cmd {
	return exec.Command("sh", append([]string{"-c", `echo $$ > "$1/cgroup.procs" && shift && exec "$@"`, "sh", dir}, argv...)...)
}

// TestCgroupTarget traces a cgroup made by the test: the process of the
// cgroup running when the agent starts names the file; processes of that
// file started in the cgroup later, and in a child cgroup made after the
// start, are traced from their first instruction with exact counts, and a
// process of the same file outside the cgroup is not (the probes' cgroup
// filter drops its hits).
func TestCgroupTarget(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	cg := testCgroup(t)
	early := inCgroup(cg, bin, "wait", "40")
	in := startReady(t, early)

	db := filepath.Join(t.TempDir(), "obs.db")
	stop := targetsSession(t, []Target{{Cgroup: cg}}, db)
	want := map[uint32]int{}
	run := func(cmd *exec.Cmd, n int, traced bool) {
		t.Helper()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
		if traced {
			want[uint32(cmd.Process.Pid)] = n
		}
	}
	run(inCgroup(cg, bin, "count", "30"), 30, true)
	run(exec.Command(bin, "count", "50"), 50, false) // outside the cgroup
	child := filepath.Join(cg, "child")
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	run(inCgroup(child, bin, "count", "25"), 25, true)
	run(inCgroup(cg, bin, "count", "60"), 60, true)
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := early.Wait(); err != nil {
		t.Fatal(err)
	}
	want[uint32(early.Process.Pid)] = 40
	res := stop()
	rows := checkTicks(t, db, want)
	for pid, r := range rows {
		if r.Binary != bin || r.ExitReason != "exited" {
			t.Errorf("pid %d: row %+v; want binary %s, exited", pid, r, bin)
		}
	}
	if res.Recorded != 155 || res.Lost() != 0 {
		t.Errorf("recorded %d, lost %d; want 155, 0: %s", res.Recorded, res.Lost(), res.Summary())
	}
	t.Log(res.Summary())
}

// TestCgroupNewProgram starts the agent on an empty cgroup: a Go program
// started in it later is found by the cgroup's watch and traced (the
// running process from the moment its probes are in, the next ones from
// their first instruction), and the same file run outside the cgroup is
// not.
func TestCgroupNewProgram(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	cg := testCgroup(t)
	db := filepath.Join(t.TempDir(), "obs.db")
	stop := targetsSession(t, []Target{{Cgroup: cg}}, db)

	held := inCgroup(cg, bin, "wait", "40")
	in := startReady(t, held)
	waitProcessRow(t, db, uint32(held.Process.Pid))
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := held.Wait(); err != nil {
		t.Fatal(err)
	}
	later := inCgroup(cg, bin, "count", "30")
	if out, err := later.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	runCount(t, bin, 50) // outside the cgroup
	res := stop()
	checkTicks(t, db, map[uint32]int{uint32(held.Process.Pid): 40, uint32(later.Process.Pid): 30})
	if res.Recorded != 70 || len(res.Targets) != 1 {
		t.Errorf("recorded %d over %d targets; want 70 over 1: %s", res.Recorded, len(res.Targets), res.Summary())
	}
}

// TestHostBudget: the rings and maps of several tracers, reserved ones
// included, fit one memory limit, and a limit too small for them is
// refused with the figure they need.
func TestHostBudget(t *testing.T) {
	for _, c := range []struct {
		targets, watches int
		limit            int64
		fits             bool
	}{
		{2, 0, DefaultMemoryLimit, true},
		{3, 0, DefaultMemoryLimit, true},
		{0, 1, DefaultMemoryLimit, true},
		{2, 1, DefaultMemoryLimit, true},
		{8, 0, 512 << 20, true},
		{8, 2, MinMemoryLimit, false},
	} {
		h := &host{opts: Options{MemoryLimit: c.limit}, log: slog.New(slog.DiscardHandler)}
		for i := range c.targets {
			s := &session{}
			names := make([]string, 10*(i+1))
			s.names.Store(&names)
			h.targets = append(h.targets, &hosted{s: s})
		}
		h.watches = make([]*cgWatch, c.watches)
		err := h.planBudget()
		if !c.fits {
			if err == nil || !strings.Contains(err.Error(), "memory limit") {
				t.Errorf("%+v: error %v; want a refusal", c, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", c, err)
			continue
		}
		b := h.budget
		sz := b.Sizes
		if b.Need() > c.limit || sz.RingOK&(sz.RingOK-1) != 0 || sz.RingErr&(sz.RingErr-1) != 0 || sz.GoroutineSlots&(sz.GoroutineSlots-1) != 0 {
			t.Errorf("%+v: need %d of %d, sizes %+v", c, b.Need(), c.limit, sz)
		}
		if h.slots != cgroupSlots*c.watches {
			t.Errorf("%+v: %d slots reserved, want %d", c, h.slots, cgroupSlots*c.watches)
		}
	}
}
