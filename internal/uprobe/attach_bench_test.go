package uprobe

import (
	"os/exec"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// manyFuncs returns the 5,000 sites of testdata/manyfuncs (2,500
// functions, entry and one RET each) and a running process of it.
func manyFuncs(tb testing.TB) (string, []Func, *exec.Cmd) {
	tb.Helper()
	testutil.RequireRoot(tb)
	bin := testutil.BuildProgram(tb, testutil.Build{Program: "manyfuncs"})
	b, err := symbols.Open(bin)
	if err != nil {
		tb.Fatal(err)
	}
	defer b.Close()
	var fs []Func
	for _, f := range b.Funcs {
		if len(f.Name) != len("main.F0000") || f.Name[:6] != "main.F" || !f.Probeable {
			continue
		}
		e, _ := b.FileOffset(f.Entry)
		uf := Func{Entry: e, SampleRate: 1}
		for _, r := range f.Rets {
			o, _ := b.FileOffset(r)
			uf.Rets = append(uf.Rets, o)
		}
		fs = append(fs, uf)
	}
	cmd := exec.Command(bin, "-wait")
	if _, err := cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return bin, fs, cmd
}

// BenchmarkAttachDetach5000 reports how long attaching and detaching 5,000
// sites takes with uprobe_multi links, and, for comparison, 50 sites with
// single perf-event uprobes (the fallback for kernels before 6.6), whose
// detach costs about 100 ms a site.
func BenchmarkAttachDetach5000(b *testing.B) {
	bin, all, cmd := manyFuncs(b)
	for _, single := range []bool{false, true} {
		name, fs := "multi-5000", all
		if single {
			name, fs = "single-50", all[:25]
		}
		b.Run(name, func(b *testing.B) {
			var att, det time.Duration
			sites, multi := 0, 0.0
			for i := 0; i < b.N; i++ {
				start := time.Now()
				tr, err := Attach(Config{Binary: bin, PID: cmd.Process.Pid, GoidOffset: 152, Funcs: fs, Single: single})
				if err != nil {
					b.Fatal(err)
				}
				att += time.Since(start)
				sites = tr.Sites()
				if tr.Multi() {
					multi = 1
				}
				det += tr.Detach()
				tr.Close()
			}
			b.ReportMetric(float64(sites), "sites")
			// 0 on a kernel without uprobe_multi (Linux 6.1), where the
			// "multi" case falls back to single uprobes as a session would.
			b.ReportMetric(multi, "uprobe_multi")
			b.ReportMetric(float64(att.Milliseconds())/float64(b.N), "attach-ms")
			b.ReportMetric(float64(det.Milliseconds())/float64(b.N), "detach-ms")
		})
	}
}
