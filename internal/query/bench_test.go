package query

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/result"
)

// BenchmarkQueries runs every query the CLI makes against the six-hour,
// six-million-call benchmark store (benchstore_test.go), each as its own
// sub-benchmark, so `go test -bench Queries ./internal/query/` prints the
// time of each. Targets (issue 10, docs/performance.md): call with
// ancestors <= 5 ms; 100 newest errors over 6 h with chains <= 30 ms;
// subtree of 1,000 calls <= 30 ms; one function's calls in the last 10 min,
// limit 100 <= 20 ms; stats over 6 h by function, package or module
// <= 50 ms; resources over 6 h of one process <= 20 ms.
func BenchmarkQueries(b *testing.B) {
	path := benchStorePath(b)
	q, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	now := benchClock
	six := Filter{Since: benchBase, Until: benchBase.Add(benchHours * time.Hour)} // the store's six hours
	live := benchBase.Add((benchHours - 1) * time.Hour)                           // the live hour
	closed := live.Add(-3 * time.Hour)

	// Subjects, found through the layer itself.
	deepError := func(since time.Time) uint64 {
		errs, err := q.Errors(ctx, Filter{Since: since, Until: since.Add(time.Hour), Limit: 200})
		if err != nil {
			b.Fatal(err)
		}
		best := errs[0]
		for _, e := range errs {
			if len(e.Chain) > len(best.Chain) {
				best = e
			}
		}
		return best.Call.ID
	}
	fanRoot := func(since time.Time) uint64 {
		cs, err := q.Calls(ctx, Filter{Since: since.Add(10 * time.Minute), Func: benchFuncName(benchFuncs - 1), Limit: 50})
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range cs {
			if c.ParentID == 0 {
				return c.ID
			}
		}
		b.Fatal("no fan-out root")
		return 0
	}
	errClosed, errLive := deepError(closed), deepError(live)
	fanClosed, fanLive := fanRoot(closed), fanRoot(live)
	fn := benchFuncName(42)

	// Each query reports wall ms/op and cpu-ms/op: the process's CPU time
	// per query. The VM is shared (up to 8 jobs on 2 cores), so wall time
	// includes waiting for a core; the queries run on one goroutine, so
	// CPU time is close to what the wall time is on an idle machine.
	run := func(name string, fn func() (int, error), wantMin int) {
		b.Run(name, func(b *testing.B) {
			var n int
			cpu0 := cpuTime()
			for b.Loop() {
				var err error
				if n, err = fn(); err != nil {
					b.Fatal(err)
				}
			}
			cpu := cpuTime() - cpu0
			if n < wantMin {
				b.Fatalf("%d results, want at least %d", n, wantMin)
			}
			b.ReportMetric(float64(n), "results")
			b.ReportMetric(float64(b.Elapsed())/1e6/float64(b.N), "ms/op")
			b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
	run("call-ancestors/closed", func() (int, error) { c, err := q.Ancestors(ctx, errClosed); return len(c), err }, 3)
	run("call-ancestors/live", func() (int, error) { c, err := q.Ancestors(ctx, errLive); return len(c), err }, 3)
	run("errors-6h-limit100-chains", func() (int, error) {
		e, err := q.Errors(ctx, Filter{Since: six.Since, Until: six.Until, Limit: 100})
		return len(e), err
	}, 100)
	run("tree-limit1000/closed", func() (int, error) { t, err := q.Tree(ctx, fanClosed, 1000); return len(t.Calls), err }, 1000)
	run("tree-limit1000/live", func() (int, error) { t, err := q.Tree(ctx, fanLive, 1000); return len(t.Calls), err }, 1000)
	run("calls-func-last10m-limit100/live", func() (int, error) {
		c, err := q.Calls(ctx, Filter{Since: live.Add(50 * time.Minute), Until: live.Add(time.Hour), Func: fn, Limit: 100})
		return len(c), err
	}, 100)
	run("calls-func-10m-limit100/closed", func() (int, error) {
		c, err := q.Calls(ctx, Filter{Since: closed.Add(50 * time.Minute), Until: closed.Add(time.Hour), Func: fn, Limit: 100})
		return len(c), err
	}, 100)
	run("calls-last1h-limit100", func() (int, error) {
		c, err := q.Calls(ctx, Filter{Since: now.Add(-time.Hour), Limit: 100})
		return len(c), err
	}, 100)
	run("stats-last6h/function", func() (int, error) { // `query stats --since 6h`: the first hour is partly in range
		rows, _, err := q.Stats(ctx, Filter{Since: now.Add(-6 * time.Hour), Limit: 100}, result.ByFunction)
		return len(rows), err
	}, 100)
	run("stats-last1h/function", func() (int, error) { // the UI's overview: one minute of the closed hour, and the live hour
		rows, _, err := q.Stats(ctx, Filter{Since: now.Add(-time.Hour), Limit: 100}, result.ByFunction)
		return len(rows), err
	}, 100)
	run("stats-live-20m/function", func() (int, error) { // 20 minutes inside the live hour
		rows, _, err := q.Stats(ctx, Filter{Since: live.Add(25 * time.Minute), Until: live.Add(45 * time.Minute), Limit: 100}, result.ByFunction)
		return len(rows), err
	}, 100)
	run("stats-5h30m/function", func() (int, error) { // the first hour half in range: its intervals are read raw
		rows, _, err := q.Stats(ctx, Filter{Since: benchBase.Add(30 * time.Minute), Until: six.Until, Limit: 100}, result.ByFunction)
		return len(rows), err
	}, 100)
	for _, by := range []result.Grouping{result.ByFunction, result.ByPackage, result.ByModule} {
		run("stats-6h/"+string(by), func() (int, error) {
			rows, _, err := q.Stats(ctx, Filter{Since: six.Since, Until: six.Until, Limit: 100}, by)
			return len(rows), err
		}, 4)
	}
	run("resources-6h-one-pid", func() (int, error) {
		rs, err := q.Resources(ctx, Filter{Since: six.Since, Until: six.Until, PID: 4242})
		return len(rs), err
	}, benchHours*720)
	run("sessions", func() (int, error) { ss, err := q.Sessions(ctx); return len(ss), err }, benchSessions)
	run("retention-status", func() (int, error) { ps, err := q.Partitions(ctx); return len(ps), err }, 4*benchHours)
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestBenchStoreShape checks a small build of the benchmark store's
// generator: trees reach depth 10, some calls run on spawned goroutines,
// about 1% are errors, and fan-out requests exceed 1,000 calls.
func TestBenchStoreShape(t *testing.T) {
	g := &callGen{sess: 1, pid: 1, goids: 100}
	g.rng = rand.New(rand.NewPCG(1, 2))
	for i := range benchFuncs {
		g.fns = append(g.fns, benchFuncName(i))
	}
	var ts int64
	sizes := map[bool]int{}
	for n := 0; n < 4000; n++ {
		before := len(g.out)
		g.goids++
		g.tree(0, 0, g.goids, &ts, n%400 == 7)
		sizes[n%400 == 7] += len(g.out) - before
	}
	depth := map[uint64]int{}
	maxDepth, spawned, errs := 0, 0, 0
	byID := map[uint64]record.Call{}
	for _, c := range g.out {
		byID[c.ID] = c
	}
	var depthOf func(uint64) int
	depthOf = func(id uint64) int {
		if d, ok := depth[id]; ok {
			return d
		}
		d := 0
		if p := byID[id].ParentID; p != 0 {
			d = depthOf(p) + 1
		}
		depth[id] = d
		return d
	}
	for _, c := range g.out {
		maxDepth = max(maxDepth, depthOf(c.ID))
		if c.ParentID != 0 && byID[c.ParentID].GoID != c.GoID {
			spawned++
		}
		if c.Status != record.StatusOK {
			errs++
		}
	}
	if maxDepth != 9 {
		t.Errorf("deepest call at depth %d, want 9 (10 levels)", maxDepth)
	}
	if spawned == 0 {
		t.Error("no call on a spawned goroutine")
	}
	if r := float64(errs) / float64(len(g.out)); r < 0.007 || r > 0.013 {
		t.Errorf("error share %.4f, want about 1%%", r)
	}
	if fan := sizes[true] / 10; fan < 1000 {
		t.Errorf("fan-out requests average %d calls, want over 1,000", fan)
	}
	t.Logf("%d calls in 4,000 requests; %d on spawned goroutines; %d errors", len(g.out), spawned, errs)
}
