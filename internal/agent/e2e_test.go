package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// treePaths is the call tree of `calltree tree` as root-to-call paths of
// function names, with how many calls have each path. Every traced call
// must appear exactly once with exactly this ancestry.
func treePaths(toolchain string) map[string]int {
	const (
		m = "main.main"
		r = m + ">main.run"
	)
	want := map[string]int{
		m:                1,
		r:                1,
		r + ">main.leaf": 1, // leaf(7), after the recovered panic
		// worker's goroutine was started by untraced hop, in a goroutine
		// relay started: its parent is still relay.
		r + ">main.relay":                            1,
		r + ">main.relay>main.worker":                1,
		r + ">main.relay>main.worker>main.leaf":      1,
		r + ">main.(*Counter).Inc":                   3,
		r + ">main.Counter.Get":                      1,
		r + ">main.Map[go.shape.int]":                1,
		r + ">main.Map[go.shape.int]>main.run.func1": 4,
		r + ">main.classify":                         4,
		r + ">main.spawn":                            1,
		r + ">main.recovered":                        1,
		r + ">main.recovered>main.panicky":           1,
		// The deferred closure runs while panicky is being unwound.
		r + ">main.recovered>main.panicky>main.recovered.func1": 1,
	}
	// Go 1.22 names the compiler's wrappers of `go f(x)` and `defer f()`
	// gowrapN and deferwrapN, which are never traced; Go 1.21 names them
	// like closures (spawn.func2 and spawn.func1.1), so they are.
	sp := r + ">main.spawn"
	if !testutil.HasGowrap(toolchain) {
		sp += ">main.spawn.func2"
		want[sp] = 5
		want[sp+">main.spawn.func1>main.spawn.func1.1"] = 5
		// `go hop(done)` is wrapped in relay.func1, traced, which is
		// active in its goroutine when hop starts worker's.
		delete(want, r+">main.relay>main.worker")
		delete(want, r+">main.relay>main.worker>main.leaf")
		want[r+">main.relay>main.relay.func1"] = 1
		want[r+">main.relay>main.relay.func1>main.worker"] = 1
		want[r+">main.relay>main.relay.func1>main.worker>main.leaf"] = 1
	}
	want[sp+">main.spawn.func1"] = 5
	want[sp+">main.spawn.func1>main.worker"] = 5
	want[sp+">main.spawn.func1>main.worker>main.leaf"] = 5
	p := r
	for i := 0; i < 4; i++ {
		p += ">main.nest"
		want[p] = 1
	}
	want[p+">main.leaf"] = 1
	p = r
	for i := 0; i <= 200; i++ {
		p += ">main.grow"
		want[p] = 1
	}
	return want
}

// attachedTree is the tree seen by attach: main.main was entered before
// the probes went in, so main.run is the root.
func attachedTree(full map[string]int) map[string]int {
	out := map[string]int{}
	for p, n := range full {
		if rest, ok := strings.CutPrefix(p, "main.main>"); ok {
			out[rest] = n
		}
	}
	return out
}

// paths turns calls into root-to-call paths; it fails the test on a
// dangling parent or a duplicate id.
func paths(t *testing.T, calls []record.Call) map[string]int {
	t.Helper()
	byID := make(map[uint64]*record.Call, len(calls))
	for i := range calls {
		c := &calls[i]
		if _, dup := byID[c.ID]; dup {
			t.Fatalf("duplicate call id %d", c.ID)
		}
		byID[c.ID] = c
	}
	memo := map[uint64]string{}
	var path func(c *record.Call, depth int) string
	path = func(c *record.Call, depth int) string {
		if p, ok := memo[c.ID]; ok {
			return p
		}
		if depth > 100000 {
			t.Fatalf("parent cycle at call %d", c.ID)
		}
		p := c.Function
		if c.ParentID != 0 {
			parent, ok := byID[c.ParentID]
			if !ok {
				t.Fatalf("call %d (%s) has parent %d, which is not recorded", c.ID, c.Function, c.ParentID)
			}
			p = path(parent, depth+1) + ">" + c.Function
		}
		memo[c.ID] = p
		return p
	}
	out := map[string]int{}
	for i := range calls {
		out[path(&calls[i], 0)]++
	}
	return out
}

func diffPaths(t *testing.T, got, want map[string]int) {
	t.Helper()
	var diffs []string
	for p, n := range want {
		if got[p] != n {
			diffs = append(diffs, fmt.Sprintf("want %d got %d: %s", n, got[p], abbreviate(p)))
		}
	}
	for p, n := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %d: %s", n, abbreviate(p)))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		if len(diffs) > 30 {
			diffs = append(diffs[:30], fmt.Sprintf("… %d more", len(diffs)-30))
		}
		t.Fatalf("call tree differs:\n%s", strings.Join(diffs, "\n"))
	}
}

// abbreviate shortens the long grow chains in messages.
func abbreviate(p string) string {
	n := strings.Count(p, ">main.grow")
	if n > 3 {
		p = strings.Replace(p, strings.Repeat(">main.grow", n), fmt.Sprintf(">main.grow×%d", n), 1)
	}
	return p
}

// runCalltree runs calltree's fixed tree under the agent and checks that
// the program behaved as it does untraced.
func runCalltree(t *testing.T, bin string, opts Options) *Result {
	t.Helper()
	var out bytes.Buffer
	res, err := Run(context.Background(), []string{bin}, nil, &out, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(out.String(), "result 419") {
		t.Fatalf("traced program misbehaved: exit %d, output %q", res.ExitCode, out.String())
	}
	return res
}

func readCalls(t *testing.T, db string) []record.Call {
	t.Helper()
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	calls, err := st.Calls(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return calls
}

func testOptions(t *testing.T) Options {
	return Options{Include: []string{"main.*"}, DB: filepath.Join(t.TempDir(), "obs.db"), SampleRate: 1}
}

// treeOptions traces calltree's tree, leaving hop untraced.
func treeOptions(t *testing.T) Options {
	o := testOptions(t)
	o.Exclude = []string{"main.hop*"}
	return o
}

// checkResult asserts the agent's own accounting: nothing lost, and the
// recorded count equals the calls in the store.
func checkResult(t *testing.T, res *Result, stored int) {
	t.Helper()
	if res.Lost() != 0 || res.Dropped != 0 {
		t.Errorf("lost %d calls (dropped %d, sampled %d)", res.Lost(), res.Dropped, res.Sampled)
	}
	if res.Recorded != uint64(stored) || res.Calls != uint64(stored) {
		t.Errorf("result says recorded %d of %d calls, store holds %d", res.Recorded, res.Calls, stored)
	}
	if res.Health.MapFull != 0 || res.Health.RingOKFull != 0 || res.Health.RingErrFull != 0 {
		t.Errorf("kernel-side losses: %+v", res.Health)
	}
}

// builds are the local toolchain's plain, stripped and PIE builds, which
// TestAttachTree uses; TestRunTree adds the release matrix.
var builds = []testutil.Build{
	{Program: "calltree"},
	{Program: "calltree", Stripped: true},
	{Program: "calltree", PIE: true},
}

// TestRunTree traces `calltree tree` with run, for every build of the
// local toolchain and of the release matrix (Go 1.21 on, plain, stripped,
// PIE, DWARF 4 and 5), and checks every call and every parent link.
func TestRunTree(t *testing.T) {
	testutil.RequireRoot(t)
	for _, b := range append(builds, testutil.Matrix("calltree")...) {
		t.Run(b.String(), func(t *testing.T) {
			bin := testutil.BuildProgram(t, b)
			opts := treeOptions(t)
			res := runCalltree(t, bin, opts)
			calls := readCalls(t, opts.DB)
			diffPaths(t, paths(t, calls), treePaths(b.Toolchain))
			checkResult(t, res, len(calls))
			checkOutcomes(t, calls, res.PID, b.Stripped)
			if res.Health.MorestackReentry == 0 {
				t.Errorf("grow(200) should have grown the stack under traced frames; health %+v", res.Health)
			}
		})
	}
}

// checkOutcomes asserts each call's status and error text: panicky is
// unwound by its panic, recovered returns the error it built from the
// recovered value (only visible with DWARF, which locates the error
// result), everything else returns normally.
func checkOutcomes(t *testing.T, calls []record.Call, pid int, stripped bool) {
	t.Helper()
	for _, c := range calls {
		if c.PID != uint32(pid) {
			t.Fatalf("call %d has pid %d, want %d", c.ID, c.PID, pid)
		}
		want := record.Call{Status: record.StatusOK}
		switch {
		case c.Function == "main.panicky":
			want = record.Call{Status: record.StatusPanic, ErrorType: "string", Error: "panicky: 3"}
		case c.Function == "main.recovered" && !stripped:
			want = record.Call{Status: record.StatusError, ErrorType: "*errors.errorString", Error: "recovered: panicky: 3"}
		}
		if c.Status != want.Status || c.Error != want.Error || c.ErrorType != want.ErrorType {
			t.Errorf("%s: status %v type %q error %q, want %v %q %q", c.Function, c.Status, c.ErrorType, c.Error,
				want.Status, want.ErrorType, want.Error)
		}
	}
}

// startHeld starts bin with -wait, so it blocks until released.
func startHeld(t *testing.T, bin string, args ...string) (*exec.Cmd, io.WriteCloser, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-wait"}, args...)...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitExec(t, cmd.Process.Pid, bin)
	return cmd, in, &out
}

// attachAndRelease attaches to a held program, releases it once the probes
// are live, and returns when it has exited.
func attachAndRelease(t *testing.T, cmd *exec.Cmd, in io.WriteCloser, opts Options) (*Result, error) {
	t.Helper()
	opts.OnReady = func(int) { in.Write([]byte("go\n")) }
	// Attach returns when the agent sees the exit through its pidfd.
	res, err := Attach(context.Background(), cmd.Process.Pid, opts)
	if err != nil {
		exe, lerr := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
		t.Logf("attach to pid %d failed; its executable is now %q (%v), started as %q", cmd.Process.Pid, exe, lerr, cmd.Path)
		if b, oerr := symbols.Open(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); oerr == nil {
			t.Logf("read again now: %d functions, main.hop found: %v", len(b.Funcs), b.Lookup("main.hop") != nil)
			b.Close()
		}
		// The program was never released: without this it would wait
		// for its "go" forever and the test would hang, not fail.
		cmd.Process.Kill()
	}
	cmd.Wait()
	return res, err
}

// TestAttachTree traces the same tree with attach --pid.
func TestAttachTree(t *testing.T) {
	testutil.RequireRoot(t)
	for _, b := range builds {
		t.Run(b.String(), func(t *testing.T) {
			bin := testutil.BuildProgram(t, b)
			cmd, in, out := startHeld(t, bin)
			opts := treeOptions(t)
			res, err := attachAndRelease(t, cmd, in, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "result 419") {
				t.Fatalf("traced program misbehaved: output %q", out.String())
			}
			calls := readCalls(t, opts.DB)
			diffPaths(t, paths(t, calls), attachedTree(treePaths(b.Toolchain)))
			checkResult(t, res, len(calls))
			checkOutcomes(t, calls, res.PID, b.Stripped)
		})
	}
}

// TestBurst20000 has 20,000 goroutines alive at once, each spawned inside
// a traced call: every goroutine's first call must link to it.
func TestBurst20000(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 20000
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	opts := testOptions(t)
	var out bytes.Buffer
	res, err := Run(context.Background(), []string{bin, "burst", fmt.Sprint(n)}, nil, &out, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("burst %d\n", 2*(n-1)*n/2); out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}
	calls := readCalls(t, opts.DB)
	b := "main.main>main.burst>main.burst.func1"
	diffPaths(t, paths(t, calls), map[string]int{
		"main.main":                     1,
		"main.main>main.burst":          1,
		b:                               n,
		b + ">main.burstWork":           n,
		b + ">main.burstWork>main.leaf": n,
	})
	checkResult(t, res, len(calls))
	goids := map[uint64]bool{}
	for _, c := range calls {
		if c.Function == "main.burst.func1" {
			goids[c.GoID] = true
		}
	}
	if len(goids) != n {
		t.Fatalf("burst goroutines: %d distinct goids, want %d", len(goids), n)
	}
}

// TestTwoProcessesSameBinary traces two processes of one binary at once,
// each with its own agent: each store holds exactly its own process's tree.
// It runs twice: with the kernel's uprobe_multi pid filter, and without it
// as on kernels before 6.10, where only the BPF programs' tgid check keeps
// each agent to its own process.
func TestTwoProcessesSameBinary(t *testing.T) {
	testutil.RequireRoot(t)
	for _, noFilter := range []bool{false, true} {
		name := "kernel-pid-filter"
		if noFilter {
			name = "bpf-tgid-filter-only"
		}
		t.Run(name, func(t *testing.T) {
			testNoKernelPIDFilter = noFilter
			defer func() { testNoKernelPIDFilter = false }()
			twoProcesses(t)
		})
	}
}

func twoProcesses(t *testing.T) {
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	type run struct {
		cmd  *exec.Cmd
		opts Options
		res  *Result
		err  error
	}
	runs := make([]*run, 2)
	var wg sync.WaitGroup
	ready := make(chan struct{}, 2)
	release := make(chan struct{})
	for i := range runs {
		cmd, in, _ := startHeld(t, bin)
		r := &run{cmd: cmd, opts: treeOptions(t)}
		runs[i] = r
		// Release both programs only when both agents are attached, so
		// they run at the same time.
		r.opts.OnReady = func(int) {
			ready <- struct{}{}
			go func() { <-release; in.Write([]byte("go\n")) }()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.res, r.err = Attach(context.Background(), cmd.Process.Pid, r.opts)
		}()
	}
	<-ready
	<-ready
	close(release)
	wg.Wait()
	for _, r := range runs {
		r.cmd.Wait()
		if r.err != nil {
			t.Fatal(r.err)
		}
		calls := readCalls(t, r.opts.DB)
		diffPaths(t, paths(t, calls), attachedTree(treePaths("")))
		for _, c := range calls {
			if c.PID != uint32(r.cmd.Process.Pid) {
				t.Fatalf("store of pid %d holds a call of pid %d", r.cmd.Process.Pid, c.PID)
			}
		}
		checkResult(t, r.res, len(calls))
	}
}

// TestSamplingKeepsErrorChains keeps no ok call at all (@0): every error
// and panic is still recorded, with its whole chain of parents, and every
// call left out is counted as sampled.
func TestSamplingKeepsErrorChains(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	opts := treeOptions(t)
	opts.Include = []string{"main.*@0"}
	res, err := Run(context.Background(), []string{bin}, nil, io.Discard, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	calls := readCalls(t, opts.DB)
	got := paths(t, calls) // fails on any dangling parent
	want := map[string]int{
		"main.main":                                      1,
		"main.main>main.run":                             1,
		"main.main>main.run>main.recovered":              1,
		"main.main>main.run>main.recovered>main.panicky": 1,
	}
	diffPaths(t, got, want)
	total := 0
	for _, n := range treePaths("") {
		total += n
	}
	if res.Calls != uint64(total) || res.Recorded != 4 || res.Sampled != uint64(total-4) || res.Dropped != 0 {
		t.Fatalf("calls %d recorded %d sampled %d dropped %d; want %d, 4, %d, 0", res.Calls, res.Recorded, res.Sampled, res.Dropped, total, total-4)
	}
}
