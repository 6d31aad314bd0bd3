package uprobe

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"sync"
	"testing"

	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// hotTarget is testdata/calltree waiting to run "hot N" (N calls of the
// small function main.hot from one goroutine), with the sites of main.hot
// and of the runtime hooks.
type hotTarget struct {
	bin   string
	cfg   Config
	cmd   *exec.Cmd
	start io.WriteCloser
}

func startHot(tb testing.TB, calls int) *hotTarget {
	tb.Helper()
	testutil.RequireRoot(tb)
	bin := testutil.BuildProgram(tb, testutil.Build{Program: "calltree"})
	b, err := symbols.Open(bin)
	if err != nil {
		tb.Fatal(err)
	}
	defer b.Close()
	off := func(v uint64) uint64 {
		o, err := b.FileOffset(v)
		if err != nil {
			tb.Fatal(err)
		}
		return o
	}
	f := b.Lookup("main.hot")
	if f == nil || !f.Probeable {
		tb.Fatal("main.hot is not probeable in calltree")
	}
	uf := Func{Entry: off(f.Entry), SampleRate: 1}
	for _, r := range f.Rets {
		uf.Rets = append(uf.Rets, off(r))
	}
	cfg := Config{Binary: bin, GoidOffset: b.GoidOffset, Funcs: []Func{uf}}
	if np := b.Lookup("runtime.newproc1"); np != nil && len(np.Rets) > 0 {
		cfg.Runtime.Newproc1, cfg.Runtime.NewprocGPReg = off(np.Entry), 1
		for _, r := range np.Rets {
			cfg.Runtime.Newproc1Rets = append(cfg.Runtime.Newproc1Rets, off(r))
		}
	}
	for name, dst := range map[string]*uint64{"runtime.gopanic": &cfg.Runtime.Gopanic,
		"runtime.goexit1": &cfg.Runtime.Goexit1, "runtime.copystack": &cfg.Runtime.Copystack} {
		if h := b.Lookup(name); h != nil {
			*dst = off(h.Entry)
		}
	}
	cmd := exec.Command(bin, "-wait", "hot", fmt.Sprint(calls))
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	cfg.PID = cmd.Process.Pid
	return &hotTarget{bin: bin, cfg: cfg, cmd: cmd, start: in}
}

// drain reads both rings until the tracer is closed, as the agent does, so
// that the rings never fill and the programs take their usual path.
func drain(tr *Tracer) (wait func() int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for _, l := range []*Lane{tr.OK(), tr.Errors()} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ev Event
			for {
				err := l.Read(&ev)
				if errors.Is(err, ErrClosed) || errors.Is(err, ErrFlushed) {
					return
				}
				if err == nil {
					mu.Lock()
					n++
					mu.Unlock()
				}
			}
		}()
	}
	return func() int { wg.Wait(); return n }
}

// BenchmarkBPFCost reports the BPF programs' own cost per traced call: the
// run time of every program (from the kernel's BPF run-time statistics,
// which exclude the uprobe trap) over the calls of a one-goroutine flood of
// a small function, every call recorded. Beside it, the same figure for
// empty programs on the same sites: what the statistics themselves add
// (they read the clock around every run), the floor no program can go
// under. Each iteration is one flood of 200,000 calls per variant; the
// figures are medians over iterations.
func BenchmarkBPFCost(b *testing.B) {
	stats, err := EnableRunStats()
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	var real, empty []float64
	var last []ProgramCost
	for i := 0; i < b.N; i++ {
		ns, costs := floodCost(b, false)
		real = append(real, ns)
		last = costs
		ns, _ = floodCost(b, true)
		empty = append(empty, ns)
	}
	b.ReportMetric(median(real), "bpf-ns/call")
	b.ReportMetric(median(empty), "empty-bpf-ns/call")
	sort.Slice(last, func(i, j int) bool { return last[i].Name < last[j].Name })
	for _, c := range last {
		if c.Runs > 0 {
			b.Logf("%-18s runs %8d  %6.0f ns/run  recursion misses %d", c.Name, c.Runs, float64(c.RunNs)/float64(c.Runs), c.RecursionMisses)
		}
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// floodCost runs one flood of hot calls traced by the real programs (or
// empty ones) and returns the programs' run time per call.
func floodCost(b *testing.B, emptyProgs bool) (float64, []ProgramCost) {
	const calls = 200000
	h := startHot(b, calls)
	h.cfg.Empty = emptyProgs
	tr, err := Attach(h.cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	wait := drain(tr)
	if _, err := io.WriteString(h.start, "\n"); err != nil {
		b.Fatal(err)
	}
	if err := h.cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	tr.Detach()
	costs, err := tr.ProgramCosts()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range []*Lane{tr.OK(), tr.Errors()} {
		l.Flush()
	}
	got := wait()
	if !emptyProgs {
		st, err := tr.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if st[0].Calls != calls || got != calls {
			b.Fatalf("kernel counted %d calls and the rings gave %d records, want %d", st[0].Calls, got, calls)
		}
	}
	var ns uint64
	for _, c := range costs {
		ns += c.RunNs
	}
	return float64(ns) / calls, costs
}
