package uprobe

import (
	"errors"
	"io"
	"os/exec"
	"sort"
	"sync"
	"testing"

	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// flood is a program of testdata that calls one small function back to back.
type flood struct {
	program string   // under testdata/
	fn      string   // the traced function
	args    []string // how to run it
	held    bool     // it takes -wait and starts on a line on stdin
}

// floods are the workloads of BenchmarkBPFCost: calltree's hot loop (one
// goroutine, a function without results) and load's flood from two
// goroutines at once (a function with an error result, one per CPU here).
var floods = []struct {
	name string
	f    flood
}{
	{"hot-1g", flood{"calltree", "main.hot", []string{"hot", "200000"}, true}},
	{"work-2g", flood{"load", "main.work", []string{"flood", "2", "5", "0"}, false}},
}

// floodTarget is a flood program ready to run, with the sites of its
// function and of the runtime hooks.
type floodTarget struct {
	bin   string
	cfg   Config
	cmd   *exec.Cmd
	start io.WriteCloser // held: write a line to start it
}

// Run lets a held flood go, and waits for the flood to end. (One that
// cannot be held is already running when the probes go in: the calls it
// made before are not counted, and its cost per call is the same.)
func (h *floodTarget) Run(tb testing.TB) {
	if h.start != nil {
		if _, err := io.WriteString(h.start, "\n"); err != nil {
			tb.Fatal(err)
		}
	}
	if err := h.cmd.Wait(); err != nil {
		tb.Fatal(err)
	}
}

func startFlood(tb testing.TB, fl flood) *floodTarget {
	tb.Helper()
	testutil.RequireRoot(tb)
	bin := testutil.BuildProgram(tb, testutil.Build{Program: fl.program})
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
	f := b.Lookup(fl.fn)
	if f == nil || !f.Probeable {
		tb.Fatalf("%s is not probeable in %s", fl.fn, fl.program)
	}
	uf := Func{Entry: off(f.Entry), SampleRate: 1}
	if er := f.ErrResult; er != nil && er.InRegs {
		uf.Err = ErrorLoc{Mode: ErrInRegs, ItabReg: uint8(er.ItabReg), DataReg: uint8(er.DataReg)}
	}
	for _, r := range f.Rets {
		uf.Rets = append(uf.Rets, off(r))
	}
	cfg := Config{Binary: bin, GoidOffset: b.Layout.Goid, Funcs: []Func{uf}}
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
	h := &floodTarget{bin: bin, cfg: cfg}
	if !fl.held {
		h.cmd = exec.Command(bin, fl.args...)
	} else {
		h.cmd = exec.Command(bin, append([]string{"-wait"}, fl.args...)...)
		in, err := h.cmd.StdinPipe()
		if err != nil {
			tb.Fatal(err)
		}
		h.start = in
	}
	if err := h.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.cmd.Process.Kill(); h.cmd.Wait() })
	h.cfg.PID = h.cmd.Process.Pid
	return h
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
// which exclude the uprobe trap) over the calls of a flood of a small
// function, every call recorded: from one goroutine (calltree's hot loop)
// and from two at once (load's work, which returns an error). Beside each,
// the same figure for empty programs on the same sites: what the
// statistics themselves add (they read the clock around every run), the
// floor no program can go under. Each iteration is one flood per variant;
// the figures are medians over iterations.
func BenchmarkBPFCost(b *testing.B) {
	stats, err := EnableRunStats()
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	for _, fl := range floods {
		b.Run(fl.name, func(b *testing.B) {
			var real, empty []float64
			var last []ProgramCost
			for i := 0; i < b.N; i++ {
				ns, costs := floodCost(b, fl.f, false)
				real = append(real, ns)
				last = costs
				ns, _ = floodCost(b, fl.f, true)
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
		})
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// floodCost runs one flood traced by the real programs (or empty ones) and
// returns the programs' run time per call, the calls counted by the
// kernel.
func floodCost(b *testing.B, fl flood, emptyProgs bool) (float64, []ProgramCost) {
	h := startFlood(b, fl)
	h.cfg.Empty = emptyProgs
	tr, err := Attach(h.cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	wait := drain(tr)
	h.Run(b)
	tr.Detach()
	costs, err := tr.ProgramCosts()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range []*Lane{tr.OK(), tr.Errors()} {
		l.Flush()
	}
	got := wait()
	var ns, calls uint64
	for _, c := range costs {
		ns += c.RunNs
		switch c.Name {
		case "obs_entry":
			calls += c.Runs
		case "obs_empty":
			calls += c.Runs / 2 // an entry and one RET per call
		}
	}
	if !emptyProgs {
		st, err := tr.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if st[0].Calls != calls || uint64(got) != calls {
			b.Fatalf("kernel counted %d calls and the rings gave %d records, want %d", st[0].Calls, got, calls)
		}
	}
	if calls == 0 {
		b.Fatalf("no call was traced (empty programs: %v): the flood ended before the probes were in", emptyProgs)
	}
	return float64(ns) / float64(calls), costs
}
