package agent

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// exeSession runs AttachExe on bin in the background. The returned start
// blocks until every probe is live; stop ends the session (as Ctrl-C
// would) and returns its result.
func exeSession(t *testing.T, bin, db string, mods ...func(*Options)) (stop func() *Result) {
	t.Helper()
	return backgroundSession(t, db, func(ctx context.Context, o Options) (*Result, error) {
		return AttachExe(ctx, bin, o)
	}, mods...)
}

// backgroundSession runs attach (AttachExe, AttachTargets) on main.tick in
// the background, as exeSession does.
func backgroundSession(t *testing.T, db string, attach func(context.Context, Options) (*Result, error), mods ...func(*Options)) (stop func() *Result) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	type out struct {
		res *Result
		err error
	}
	done := make(chan out, 1)
	opts := Options{
		Include: []string{"main.tick"}, DB: db, SampleRate: 1, SampleInterval: -1,
		OnReady: func(int) { close(ready) },
	}
	for _, m := range mods {
		m(&opts)
	}
	go func() {
		res, err := attach(ctx, opts)
		done <- out{res, err}
	}()
	select {
	case <-ready:
	case o := <-done:
		cancel()
		t.Fatalf("attach --exe ended before it was ready: %v", o.err)
	}
	var stopped bool
	stop = func() *Result {
		t.Helper()
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		o := <-done
		if o.err != nil {
			t.Fatalf("attach --exe: %v", o.err)
		}
		return o.res
	}
	t.Cleanup(func() { stop() })
	return stop
}

// runCount runs `bin count n` to completion and returns its pid.
func runCount(t *testing.T, bin string, n int) uint32 {
	t.Helper()
	cmd := exec.Command(bin, "count", strconv.Itoa(n))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s count %d: %v\n%s", bin, n, err, out)
	}
	return uint32(cmd.Process.Pid)
}

// tickCounts counts main.tick's calls and errors per pid.
func tickCounts(calls []record.Call) (calls_, errs map[uint32]int) {
	calls_, errs = map[uint32]int{}, map[uint32]int{}
	for _, c := range calls {
		if c.Function != "main.tick" {
			continue
		}
		calls_[c.PID]++
		if c.Status == record.StatusError {
			errs[c.PID]++
		}
	}
	return calls_, errs
}

// checkProcess asserts that every process traced by the session recorded
// exactly n calls of main.tick (n/10 of them errors), by its calls, by its
// stored aggregates (query stats --pid), and by its process row.
func checkProcesses(t *testing.T, db string, bin string, want map[uint32]int) {
	t.Helper()
	rows := checkTicks(t, db, want)
	for pid := range want {
		p, ok := rows[pid]
		switch {
		case !ok:
			t.Errorf("pid %d has no process row", pid)
		case p.End == 0 || p.End < p.Start || p.ExitReason != "exited" || p.Binary != bin || p.BuildID == "":
			t.Errorf("pid %d: process row %+v; want an end after its start, reason exited, binary %s and a build id", pid, p, bin)
		}
	}
}

// TestExeRestarts restarts a target three times during one attach --exe
// session: each process is traced from its first instruction, with its
// exact call count under its own pid, and the session outlives them all;
// with uprobe_multi links and with one perf-event uprobe per site (the
// path of kernels before 6.6).
func TestExeRestarts(t *testing.T) {
	testutil.RequireRoot(t)
	for _, single := range []bool{false, true} {
		t.Run(map[bool]string{false: "uprobe_multi", true: "single-probes"}[single], func(t *testing.T) {
			testExeRestarts(t, single)
		})
	}
}

func testExeRestarts(t *testing.T, single bool) {
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	db := filepath.Join(t.TempDir(), "obs.db")
	stop := exeSession(t, bin, db, func(o *Options) { o.SingleProbes = single })
	want := map[uint32]int{}
	for i, n := range []int{100, 250, 70} {
		pid := runCount(t, bin, n)
		if _, dup := want[pid]; dup {
			t.Fatalf("run %d reused pid %d", i, pid)
		}
		want[pid] = n
	}
	res := stop()
	checkProcesses(t, db, bin, want)
	if res.Sites == 0 {
		t.Error("no probe sites attached")
	}
	if res.Processes != 3 || res.Recorded != 420 || res.Lost() != 0 {
		t.Errorf("result: %d processes, %d recorded, %d lost; want 3, 420, 0 (%s)", res.Processes, res.Recorded, res.Lost(), res.Summary())
	}
}

// TestExeOnlyThatFile runs two processes of the traced file (one already
// running when the session starts, one started later) and one of a byte
// for byte copy of it: only the traced file's processes are recorded, as
// processes are matched by device and inode, not by name or content.
func TestExeOnlyThatFile(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	dir := t.TempDir()
	traced := filepath.Join(dir, "procs")
	other := filepath.Join(dir, "other", "procs")
	for _, p := range []string{traced, other} {
		copyFile(t, bin, p)
	}

	early := exec.Command(traced, "wait", "40")
	in := startReady(t, early)

	db := filepath.Join(dir, "obs.db")
	stop := exeSession(t, traced, db)
	late := runCount(t, traced, 30)
	runCount(t, other, 50)
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := early.Wait(); err != nil {
		t.Fatal(err)
	}
	stop()
	checkProcesses(t, db, traced, map[uint32]int{uint32(early.Process.Pid): 40, late: 30})
}

// TestExeShortLivedChildren has a program start 20 children from its own
// executable one after another, each living a few milliseconds: every
// child's calls are recorded under its pid.
func TestExeShortLivedChildren(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	db := filepath.Join(t.TempDir(), "obs.db")
	stop := exeSession(t, bin, db)
	const k, n = 20, 30
	start := time.Now()
	cmd := exec.Command(bin, "spawn", strconv.Itoa(k), strconv.Itoa(n))
	outb, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	stop()
	want := map[uint32]int{uint32(cmd.Process.Pid): 0}
	for _, f := range strings.Fields(string(outb)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		want[uint32(pid)] = n
	}
	if len(want) != k+1 {
		t.Fatalf("spawn printed %d child pids, want %d", len(want)-1, k)
	}
	// The parent calls no main.tick; it has a process row but no calls.
	calls := readCalls(t, db)
	got, _ := tickCounts(calls)
	for pid, m := range want {
		if got[pid] != m {
			t.Errorf("pid %d: %d calls recorded, want %d", pid, got[pid], m)
		}
	}
	if len(got) != k {
		t.Errorf("calls from %d processes, want %d", len(got), k)
	}
	t.Logf("%d children in %v (%v each on average)", k, took, took/k)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestProcessRowOfRun: a session of one process (run) stores its process
// row too, with the session's exit reason, so that `query processes`
// lists every traced process whichever command traced it.
func TestProcessRowOfRun(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	db := filepath.Join(t.TempDir(), "obs.db")
	opts := Options{Include: []string{"main.tick"}, DB: db, SampleRate: 1, SampleInterval: -1}
	var pids []uint32
	for _, n := range []int{20, 30} {
		res, err := Run(context.Background(), []string{bin, "count", strconv.Itoa(n)}, nil, nil, nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, uint32(res.PID))
	}
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	procs, err := st.Processes(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) != 2 {
		t.Fatalf("%d process rows, want 2: %+v", len(procs), procs)
	}
	for i, p := range procs {
		if p.PID != pids[i] || p.End < p.Start || p.ExitReason != "target exited with code 0" || p.Binary != bin || p.BuildID == "" {
			t.Errorf("row %d: %+v; want pid %d, exited with code 0, binary %s, a build id", i, p, pids[i], bin)
		}
	}
	got, _ := tickCounts(readCalls(t, db))
	if got[pids[0]] != 20 || got[pids[1]] != 30 {
		t.Errorf("calls per pid %v; want %d: 20, %d: 30", got, pids[0], pids[1])
	}
}

// TestExeInPIDNamespace runs a process of the traced file inside a new pid
// and mount namespace (unshare --pid --fork --mount-proc, as a container
// would), started by a path that exists only in its mount namespace (a
// bind mount on a private tmpfs): it is matched by inode, traced with its
// host pid, and its row keeps its namespaced pid (1).
func TestExeInPIDNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	dir := t.TempDir()
	traced := filepath.Join(dir, "bin", "procs")
	copyFile(t, bin, traced)
	ctr := filepath.Join(dir, "ctr") // empty on the host
	if err := os.Mkdir(ctr, 0o755); err != nil {
		t.Fatal(err)
	}
	inside := filepath.Join(ctr, "app")
	db := filepath.Join(dir, "obs.db")
	stop := exeSession(t, traced, db)

	script := `mount -t tmpfs none "$1" && touch "$1/app" && mount --bind "$2" "$1/app" && exec "$1/app" wait 40`
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--propagation", "private", "sh", "-c", script, "sh", ctr, traced)
	cmd.Stderr = os.Stderr
	in := startReady(t, cmd)
	if _, err := os.Stat(inside); !os.IsNotExist(err) {
		t.Fatalf("%s exists on the host (%v): the test needs a path only the namespace has", inside, err)
	}
	// The follower finds the process on its next scan of /proc; wait for
	// its row (a condition, with a deadline, not a fixed sleep).
	var row store.Process
	deadline := time.Now().Add(10 * time.Second)
	for row.PID == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no process row for the namespaced process within 10 s")
		}
		if st, err := store.Open(db, store.Options{ReadOnly: true}); err == nil {
			ps, _ := st.Processes(context.Background(), 0)
			st.Close()
			for _, p := range ps {
				if p.NSPID != 0 {
					row = p
				}
			}
		}
		if row.PID == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	stop()
	if row.NSPID != 1 || row.PID == 1 {
		t.Errorf("row %+v: want the host pid, and ns pid 1", row)
	}
	checkProcesses(t, db, traced, map[uint32]int{row.PID: 40})
}

// startReady starts a command that prints "ready" when it has started
// (procs wait, churn) and returns its stdin once it has; what procs waits
// for is a line on stdin, churn for stdin to close.
func startReady(t *testing.T, cmd *exec.Cmd) io.WriteCloser {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("%v did not start: %q, %v", cmd.Args, line, err)
	}
	return in
}

// BenchmarkFollowerScan times one scan of /proc by the follower of a file
// that no process runs (the steady cost of attach --exe, paid every
// followEvery): go test -run '^$' -bench FollowerScan ./internal/agent/
func BenchmarkFollowerScan(b *testing.B) {
	var st unix.Stat_t
	if err := unix.Stat("/bin/true", &st); err != nil {
		b.Skip(err)
	}
	s := &session{log: slog.Default()}
	f := newFollower(s, "/bin/true", uint64(st.Dev), st.Ino, "")
	ents, _ := os.ReadDir("/proc")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.scan(true)
	}
	b.ReportMetric(float64(len(ents)), "proc-entries")
}

// TestExeMetrics scrapes /metrics of an attach --exe session after two
// processes ran: the per-function counters add up every process's calls.
// They are the kernel's, which count each call as it returns: once the
// processes have exited, one scrape has them all.
func TestExeMetrics(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "procs"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := exeSession(t, bin, filepath.Join(t.TempDir(), "obs.db"), func(o *Options) { o.Metrics = ln })
	runCount(t, bin, 30)
	runCount(t, bin, 30)
	fams, err := scrape(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	s := series(fams, "obs_agent_calls_total")
	key := "binary=" + bin + ",function=main.tick,package=main,status="
	if ok, errs := s[key+"ok"].GetCounter().GetValue(), s[key+"error"].GetCounter().GetValue(); ok != 54 || errs != 6 {
		t.Errorf("obs_agent_calls_total for main.tick: ok %v, error %v; want 54, 6 (series %v)", ok, errs, s)
	}
}

// BenchmarkFollowerSaw times the follower's accounting of one record (the
// per-record cost attach --exe adds on the ring readers' path), over 8
// processes and 16 functions.
func BenchmarkFollowerSaw(b *testing.B) {
	f := newFollower(&session{log: slog.Default()}, "/bin/true", 0, 0, "")
	for pid := uint32(1); pid <= 8; pid++ {
		f.procs[pid] = &followed{}
	}
	c := record.Call{Duration: 1500}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.PID = uint32(i%8) + 1
		c.Function = funcNames[i%16]
		f.saw(&c, uint32(i%16))
	}
}

var funcNames = func() []string {
	out := make([]string, 16)
	for i := range out {
		out[i] = "github.com/acme/api/server.(*Handler).Func" + strconv.Itoa(i)
	}
	return out
}()

// TestFollowerPendedAfterExit: calls of a process pended while a scan was
// resolving it (saw runs on the ring readers, between resolvePending's
// swap of the pending set and its consider), of a process that exited
// before the next scan, do not store it a second time from its calls.
// The race step of CI once found two rows for one short-lived process.
func TestFollowerPendedAfterExit(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "obs.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A pid whose process has exited: the follower followed it, ended it
	// (gone), and a call it made was pended in that window.
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	f := newFollower(&session{log: slog.Default(), st: st}, "/bin/true", 0, 0, "")
	f.gone[pid] = true
	f.pending[pid] = &followed{first: 1, last: 2}
	f.resolvePending()
	procs, err := st.Processes(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) != 0 {
		t.Errorf("an ended process was stored again from its pended calls: %+v", procs)
	}
}
