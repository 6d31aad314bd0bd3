package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// The stress tests run testdata/load, which counts every call it makes to
// main.work and every error it gets back, and check the agent's accounting
// against those counts exactly:
//
//   - calls made (the program's count) == calls in the kernel aggregates
//     (Result.Calls and the store's per-function stats)
//     == recorded + lost;
//   - every error made has its record in the store: the number of
//     status=error records equals the errors made, exactly;
//   - the error lane lost nothing (Result.Health.RingErrFull == 0).
//
// Ok calls may be dropped under a flood (the ok ring or queue fills); that
// is allowed and logged, as long as it is counted.

// loadErrText is the error main.work returns.
const loadErrText = "work: injected failure"

func runLoad(t *testing.T, args ...string) (*Result, string, loadOutput) {
	t.Helper()
	bin := testutil.BuildProgram(t, testutil.Build{Program: "load"})
	opts := Options{Include: []string{"main.work"}, SampleRate: 1, DB: filepath.Join(t.TempDir(), "obs.db")}
	var out bytes.Buffer
	start := time.Now()
	res, err := Run(context.Background(), append([]string{bin}, args...), nil, &out, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("load %v exited with %d: %q", args, res.ExitCode, out.String())
	}
	t.Logf("load %v under agent.Run: %v wall, attach %v, detach %v, %d sites", args,
		time.Since(start).Round(time.Millisecond), res.AttachTime.Round(time.Millisecond),
		res.DetachTime.Round(time.Millisecond), res.Sites)
	return res, opts.DB, parseLoad(t, out.String())
}

// checkExact asserts the accounting above for every function the program
// reported.
func checkExact(t *testing.T, res *Result, db string, lo loadOutput) {
	t.Helper()
	t.Logf("result: calls %d, recorded %d, lost %d (sampled %d, dropped %d); health %+v",
		res.Calls, res.Recorded, res.Lost(), res.Sampled, res.Dropped, res.Health)
	var madeCalls uint64
	for _, m := range lo.made {
		madeCalls += m.calls
	}
	if res.Calls != madeCalls {
		t.Errorf("kernel aggregates count %d calls, the program made %d", res.Calls, madeCalls)
	}
	if res.Recorded+res.Lost() != res.Calls {
		t.Errorf("recorded %d + lost %d != %d calls", res.Recorded, res.Lost(), res.Calls)
	}
	if res.Health.RingErrFull != 0 {
		t.Errorf("error ring full %d times: error-lane records were lost", res.Health.RingErrFull)
	}

	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	rows, err := st.Stats(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	byFn := map[string]store.FuncStats{}
	for _, r := range rows {
		byFn[r.Function.Name] = r
	}
	var stored int
	for fn, m := range lo.made {
		r, ok := byFn[fn]
		if !ok {
			t.Errorf("%s: no aggregates in the store", fn)
			continue
		}
		t.Logf("%s: made %d calls, %d errors; aggregates: calls %d, errors %d, recorded %d, sampled %d, dropped %d",
			fn, m.calls, m.errors, r.Calls, r.Errors, r.Recorded, r.Sampled, r.Dropped)
		if r.Calls != m.calls || r.Errors != m.errors {
			t.Errorf("%s: aggregates count %d calls, %d errors; the program made %d, %d", fn, r.Calls, r.Errors, m.calls, m.errors)
		}
		if r.Recorded+r.Lost() != r.Calls {
			t.Errorf("%s: recorded %d + lost %d != %d calls", fn, r.Recorded, r.Lost(), r.Calls)
		}
		calls, err := st.Calls(ctx, store.Filter{Func: fn})
		if err != nil {
			t.Fatal(err)
		}
		stored += len(calls)
		var errs, bad uint64
		for i := range calls {
			c := &calls[i]
			switch c.Status {
			case record.StatusOK:
			case record.StatusError:
				errs++
				if c.Error != loadErrText || c.ErrorType != "*errors.errorString" {
					bad++
					if bad <= 3 {
						t.Errorf("%s: call %d: error %q of type %q, want %q *errors.errorString", fn, c.ID, c.Error, c.ErrorType, loadErrText)
					}
				}
			default:
				t.Errorf("%s: call %d has status %v", fn, c.ID, c.Status)
			}
		}
		if errs != m.errors {
			t.Errorf("%s: %d error records in the store, the program made %d errors", fn, errs, m.errors)
		}
		if uint64(len(calls)) != r.Recorded {
			t.Errorf("%s: the store holds %d calls, its aggregates say %d recorded", fn, len(calls), r.Recorded)
		}
	}
	if uint64(stored) != res.Recorded {
		t.Errorf("the store holds %d calls, the result says %d recorded", stored, res.Recorded)
	}
}

// TestStressFlood: 4 goroutines call main.work back to back for 3 s,
// 1% errors.
func TestStressFlood(t *testing.T) {
	testutil.RequireRoot(t)
	res, db, lo := runLoad(t, "flood", "4", "3", "1")
	checkExact(t, res, db, lo)
}

// TestStressBurst: 20,000 goroutines alive at once, each calls main.work
// once, 10% errors.
func TestStressBurst(t *testing.T) {
	testutil.RequireRoot(t)
	const n = 20000
	res, db, lo := runLoad(t, "burst", fmt.Sprint(n), "10")
	if m := lo.made["main.work"]; m.calls != n || m.errors != n/10 {
		t.Fatalf("the program made %d calls, %d errors; want %d, %d", m.calls, m.errors, n, n/10)
	}
	checkExact(t, res, db, lo)
}

// TestStressFloodAgentCost runs the same flood through the real obs-agent
// binary and logs obs-agent's own CPU and peak RSS (see cost_test.go for
// what exactly is measured). It also checks the exit line's accounting.
//
// A circuit breaker budget (--max-overhead) would trip on this flood (over
// 100k calls/s, an estimated 1.2 CPUs of traps) and pause the probes:
// calls made during a pause are seen by no one, so the exact accounting
// could not hold. The breaker is off by default; --max-overhead 0 says so
// explicitly, as agent.Run's zero Options.MaxOverhead does, so the figures
// are those of tracing every call.
func TestStressFloodAgentCost(t *testing.T) {
	testutil.RequireRoot(t)
	c := runAgentBinary(t, []string{"-f", "main.work", "--max-overhead", "0"}, 3*time.Second, "flood", "4", "3", "1")
	m := c.Target.made["main.work"]
	t.Logf("made %d calls, %d errors; exit line: recorded %d, lost %d", m.calls, m.errors, c.Recorded, c.Lost)
	if c.Recorded+c.Lost != m.calls {
		t.Errorf("exit line: recorded %d + lost %d != %d calls made", c.Recorded, c.Lost, m.calls)
	}
	t.Logf("%s", c)
	t.Logf("agent CPU per call made: %.2f µs", float64(c.CPU.Nanoseconds())/1e3/float64(m.calls))
}
