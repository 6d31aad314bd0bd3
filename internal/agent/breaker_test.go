package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// TestCircuitBreaker runs a hot phase that costs the target far more than
// the budget, then a cool one: the breaker must pause main.hot (a stored
// gap with its reason), leave the program's behaviour alone, and resume the
// probes, after which calls are recorded again.
func TestCircuitBreaker(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	opts := testOptions(t)
	opts.Include = []string{"main.hot"}
	opts.MaxOverhead = 0.2
	// /metrics is scraped every 100 ms while the program runs: it must
	// count the pauses.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opts.Metrics = ln
	stop, scraped := make(chan struct{}), make(chan float64, 1)
	opts.OnReady = func(int) {
		go func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			most := 0.0
			defer func() { scraped <- most }()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if fams, err := scrape(ln.Addr().String()); err == nil {
					most = max(most, fams["obs_agent_breaker_pauses_total"].GetMetric()[0].GetCounter().GetValue())
				}
			}
		}()
	}
	var out bytes.Buffer
	const hotN, coolN = 2000000, 7000
	res, err := Run(context.Background(), []string{bin, "hotcool", "2000000", "7000"}, nil, &out, io.Discard, opts)
	close(stop)
	if err != nil {
		t.Fatal(err)
	}
	if pauses := <-scraped; pauses < 1 || pauses > float64(res.Gaps) {
		t.Errorf("obs_agent_breaker_pauses_total reached %g during the run; the session paused %d times", pauses, res.Gaps)
	}
	if !strings.HasPrefix(out.String(), "hotcool calls=2007000 ") {
		t.Fatalf("program output changed: %q", out.String())
	}
	st, err := store.Open(opts.DB, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	gaps, err := st.Gaps(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gaps) == 0 {
		t.Fatalf("no gap stored; result %+v", res)
	}
	g := gaps[0]
	if g.Function != "main.hot" || !strings.Contains(g.Reason, "circuit breaker") || g.End <= g.Start {
		t.Fatalf("gap %+v", g)
	}
	calls, err := st.Calls(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	after := 0
	for _, c := range calls {
		if c.Start > g.End {
			after++
		}
	}
	if after == 0 {
		t.Fatalf("no call recorded after the gap ended at %d: the probes did not resume", g.End)
	}
	if res.Recorded >= hotN+coolN {
		t.Fatalf("recorded %d calls: nothing was paused", res.Recorded)
	}
	if res.Lost() != 0 {
		t.Fatalf("lost %d: paused calls must show as a gap, not as losses of seen calls", res.Lost())
	}
	t.Logf("gap %.2fs; recorded %d of %d calls, %d after the gap", float64(g.End-g.Start)/1e9, res.Recorded, hotN+coolN, after)
}

// fakeProbes are counters the breaker test drives by hand, and the sites
// the breaker last asked to be taken out.
type fakeProbes struct {
	calls   []uint64
	removed map[int]uprobe.Removed
}

func (f *fakeProbes) Stats() ([]uprobe.Stats, error) {
	out := make([]uprobe.Stats, len(f.calls))
	for i, c := range f.calls {
		out[i].Calls = c
	}
	return out, nil
}

func (f *fakeProbes) Reattach(removed map[int]uprobe.Removed) (time.Duration, error) {
	f.removed = removed
	return 0, nil
}

// Sites: each function has one entry and one RET site.
func (f *fakeProbes) Sites() int {
	n := 0
	for id := range f.calls {
		r := f.removed[id]
		if !r.Entry {
			n++
		}
		if !r.Rets {
			n++
		}
	}
	return n
}

type gapList []record.Gap

func (g *gapList) WriteGap(x record.Gap) { *g = append(*g, x) }

// TestBreakerDecisions drives the breaker's decisions through its
// interfaces, tick by tick: the hottest function over the budget loses its
// entry sites, then its RET sites a tick later; a cool one is left alone;
// after the back-off the probes return, the gap is closed, and the pause
// was counted once.
func TestBreakerDecisions(t *testing.T) {
	probes := &fakeProbes{calls: []uint64{0, 0}}
	var gaps gapList
	var counts probeCounts
	b := newBreaker(probes, &gaps, func(id int) string { return []string{"main.hot", "main.cool", "main.added"}[id] }, 42, 0.5, &counts, slog.New(slog.DiscardHandler))
	pauses := &counts.pauses
	t0 := time.Unix(1_000_000, 0)
	step := func(i int, hot, cool uint64) {
		probes.calls[0] += hot
		probes.calls[1] += cool
		if err := b.tick(t0.Add(time.Duration(i) * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	step(0, 0, 0)
	// 100k calls/s × 10 µs = 1 CPU, over the 0.5 budget; 100 calls/s is not.
	step(1, 100_000, 100)
	if r, ok := probes.removed[0]; !ok || !r.Entry || r.Rets || len(probes.removed) != 1 {
		t.Fatalf("after the hot tick, removed %+v; want main.hot's entry sites only", probes.removed)
	}
	if len(gaps) != 1 || gaps[0].Function != "main.hot" || gaps[0].PID != 42 || gaps[0].End != 0 || pauses.Load() != 1 {
		t.Fatalf("gaps %+v, pauses %d", gaps, pauses.Load())
	}
	step(2, 0, 100)
	if r := probes.removed[0]; !r.Entry || !r.Rets || counts.sites.Load() != 2 {
		t.Fatalf("a tick later, removed %+v, %d sites; want its RET sites too, main.cool's 2 sites left", probes.removed, counts.sites.Load())
	}
	for i := 3; i < 3+5; i++ { // the first back-off is 5 s
		step(i, 0, 100)
	}
	if len(probes.removed) != 0 {
		t.Fatalf("after the back-off, still removed: %+v", probes.removed)
	}
	if len(gaps) != 2 || gaps[1].End != t0.Add(6*time.Second).UnixNano() || pauses.Load() != 1 {
		t.Fatalf("gaps %+v, pauses %d; want the gap closed at the resume", gaps, pauses.Load())
	}
	// A reload adds a function (its id comes after the others): its rate
	// counts from 0, and it is paused like any other.
	probes.calls = append(probes.calls, 0)
	step(9, 0, 0)
	probes.calls[2] += 100_000
	step(10, 0, 0)
	if r, ok := probes.removed[2]; !ok || !r.Entry || len(probes.removed) != 1 {
		t.Fatalf("after the added function's hot tick, removed %+v; want its entry sites", probes.removed)
	}
}
