package agent

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

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
	var out bytes.Buffer
	const hotN, coolN = 2000000, 7000
	res, err := Run(context.Background(), []string{bin, "hotcool", "2000000", "7000"}, nil, &out, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
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
