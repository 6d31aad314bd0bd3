package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
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
