package uprobe

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// phasesServe runs testdata/phases serve and returns its binary and a
// function that sends it one command and returns its answer.
func phasesServe(t *testing.T) (bin string, pid int, cmd func(string) string) {
	t.Helper()
	bin = testutil.BuildProgram(t, testutil.Build{Program: "phases"})
	c := exec.Command(bin, "serve")
	in, _ := c.StdinPipe()
	out, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); c.Process.Kill(); c.Wait() })
	r := bufio.NewReader(out)
	read := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("phases: %v", err)
		}
		return strings.TrimSpace(l)
	}
	if l := read(); l != "ready" {
		t.Fatalf("phases said %q, want ready", l)
	}
	return bin, c.Process.Pid, func(s string) string {
		if _, err := io.WriteString(in, s+"\n"); err != nil {
			t.Fatal(err)
		}
		return read()
	}
}

// probeFuncs returns the sites of the named functions of bin.
func probeFuncs(t *testing.T, b *symbols.Binary, names ...string) []Func {
	t.Helper()
	off := func(v uint64) uint64 {
		o, err := b.FileOffset(v)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	var out []Func
	for _, n := range names {
		f := b.Lookup(n)
		if f == nil || !f.Probeable {
			t.Fatalf("%s is not probeable", n)
		}
		uf := Func{Entry: off(f.Entry), SampleRate: 1, EntryAddr: f.Entry}
		for _, r := range f.Rets {
			uf.Rets = append(uf.Rets, off(r))
		}
		out = append(out, uf)
	}
	return out
}

// TestUpdateInPlace adds and removes functions of a running tracer while
// the target calls a kept one back to back, and checks with the kernel's
// exact per-function counters that no call of the kept function was lost
// or counted twice across the switches (a missed entry loses the call, a
// missed RET leaves its frame open, which the next call then takes for a
// morestack re-entry; an entry handled twice is such a re-entry too), that
// an added function is traced from the switch on and a removed one no
// longer is, and that a removed function's call open across the switch is
// still closed by its own RET, after which Retire takes its RET sites out.
//
// It runs with uprobe_multi links and with one perf-event uprobe per site
// (--single-probes), whose switches are slower (each site's detach waits
// for its own grace period), so fewer of them.
func TestUpdateInPlace(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("multi", func(t *testing.T) { testUpdateInPlace(t, false, 6) })
	t.Run("single", func(t *testing.T) { testUpdateInPlace(t, true, 2) })
}

func testUpdateInPlace(t *testing.T, single bool, switches int) {
	bin, pid, cmd := phasesServe(t)
	b, err := symbols.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// ids: 0 outer, 1 alpha, 2 beta; gamma (3) comes later.
	all := probeFuncs(t, b, "main.outer", "main.alpha", "main.beta", "main.gamma")
	tr, err := Attach(Config{Binary: bin, PID: pid, GoidOffset: b.Layout.Goid, Funcs: all[:3], Capacity: 8, Single: single})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.Capacity() != 8 || tr.Funcs() != 3 {
		t.Fatalf("capacity %d, funcs %d; want 8, 3", tr.Capacity(), tr.Funcs())
	}
	// outer was entered before the attach: its call is not seen.
	const steps = 5
	for range steps {
		if got := cmd("step"); got != "ok" {
			t.Fatalf("step: %q", got)
		}
	}
	sites0 := tr.Sites()
	if got := cmd("spin"); got != "spinning" {
		t.Fatalf("spin: %q", got)
	}
	// While alpha is called back to back: add gamma and remove beta, then
	// back and forth a few times, each switch a new generation.
	// What callers read without a lock (the /metrics scrape, a reload's
	// plan) is read all along the switches: under -race (make test-race)
	// this fails if a switch writes it unsynchronised.
	stopReading := readAlong(tr)
	var took []string
	for i := range switches {
		off := map[int]bool{2: true}
		if i%2 == 1 {
			off = map[int]bool{3: true}
		}
		d, err := tr.Update(all, off)
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		took = append(took, d.String())
	}
	if n := stopReading(); n == 0 {
		t.Error("the concurrent reader never read")
	}
	t.Logf("%d switches with alpha called back to back took %s", switches, strings.Join(took, ", "))
	var spun int
	if _, err := fmt.Sscanf(cmd("stop"), "spun %d", &spun); err != nil {
		t.Fatal(err)
	}
	// In force now: beta off, gamma on (the last update, an odd i, took
	// gamma out; one more puts the final state).
	if _, err := tr.Update(all, map[int]bool{2: true}); err != nil {
		t.Fatal(err)
	}
	before := stats(t, tr)
	for range steps {
		cmd("step")
	}
	after := stats(t, tr)
	if want := uint64(2*steps + spun); after[1].Calls != want {
		t.Errorf("alpha: %d calls counted, want exactly %d (%d steps, %d spun across %d switches)", after[1].Calls, want, 2*steps, spun, switches+1)
	}
	if d := after[2].Calls - before[2].Calls; d != 0 {
		t.Errorf("beta, removed: %d calls counted after the switch, want 0", d)
	}
	if d := after[3].Calls - before[3].Calls; d != steps {
		t.Errorf("gamma, added: %d calls counted after the switch, want %d", d, steps)
	}
	if c := after[2].Calls; c < steps || c > uint64(steps+spun) {
		t.Errorf("beta: %d calls, want %d to %d", c, steps, steps+spun)
	}
	h, err := tr.Health()
	if err != nil {
		t.Fatal(err)
	}
	if h.MorestackReentry != 0 {
		t.Errorf("%d entries seen twice: a trap was handled twice or a RET was missed", h.MorestackReentry)
	}

	// beta has no call open: Retire takes its RET sites out.
	if n, err := tr.Retire(); err != nil || n != 0 {
		t.Fatalf("retire: %d waiting, %v", n, err)
	}
	if got, want := tr.Sites(), sites0-len(all[2].Rets)-1+len(all[3].Rets)+1; got != want {
		t.Errorf("%d sites after retiring beta, want %d", got, want)
	}

	// A call of outer (entered now, traced) open while outer is taken
	// out: it is closed by its own RET, and only then do outer's RET
	// sites go.
	if got := cmd("nest"); got != "nested" {
		t.Fatalf("nest: %q", got)
	}
	if _, err := tr.Update(all, map[int]bool{0: true, 2: true}); err != nil {
		t.Fatal(err)
	}
	if n, err := tr.Retire(); err != nil || n != 1 {
		t.Fatalf("retire with outer's call open: %d waiting, %v; want 1", n, err)
	}
	cmd("step")
	if got := cmd("end"); got != "unnested" {
		t.Fatalf("end: %q", got)
	}
	if n, err := tr.Retire(); err != nil || n != 0 {
		t.Fatalf("retire once outer's call returned: %d waiting, %v; want 0", n, err)
	}
	final := stats(t, tr)
	if o := final[0]; o.Calls != 1 || o.Unfinished != 0 {
		t.Errorf("outer: %d calls, %d unfinished; want its one call, closed by its RET", o.Calls, o.Unfinished)
	}
	if final[1].Calls != after[1].Calls+1 {
		t.Errorf("alpha: %d calls, want %d", final[1].Calls, after[1].Calls+1)
	}
	open, err := tr.TakeOpen(uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range open {
		if f.FuncID == 0 {
			t.Errorf("outer's call %d left open", f.ID)
		}
	}
	if _, err := tr.Update(all[:2], nil); err == nil {
		t.Error("an update that shrinks the function table was accepted")
	}
	big := append(all, all...)
	big = append(big, all...)
	if _, err := tr.Update(big, nil); !errors.Is(err, ErrNoRoom) {
		t.Errorf("an update past the capacity: %v, want ErrNoRoom", err)
	}
}

func stats(t *testing.T, tr *Tracer) []Stats {
	t.Helper()
	s, err := tr.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readAlong reads what a tracer's callers read without its lock, over and
// over from another goroutine, until the returned func is called; that
// returns how many rounds it read.
func readAlong(tr *Tracer) (stop func() int) {
	done := make(chan struct{})
	rounds := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-done:
				rounds <- n
				return
			default:
			}
			_, _, _ = tr.Sites(), tr.Capacity(), tr.Funcs()
			n++
			runtime.Gosched()
		}
	}()
	return func() int {
		close(done)
		return <-rounds
	}
}
