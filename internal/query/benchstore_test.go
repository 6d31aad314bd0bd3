package query

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

// The benchmark store: what an agent tracing a busy service for six hours
// leaves behind. Two processes (sessions) of one service; 6,000,000 calls
// over 200 functions in 20 packages of 4 modules, 1,000,000 per hour;
// requests are call trees up to 10 levels deep, some calls on goroutines
// their parent spawned (often still running when the parent returns), 1%
// errors, 0.1% panics; one in 400 requests is a fan-out of over 1,000
// calls. Stats every minute per function and process, resource samples
// every 5 s per process, a few probe gaps. Hours 04..08 are closed and
// built (indexes, rollups); hour 09 is the open hour, built up to its
// newest call as the background builder leaves it every 30 s.
//
// Building it takes minutes on the 2-core VM, so it is cached on disk:
// $OBS_BENCH_STORE, else <tmp>/obs-agent-bench/store-v<benchStoreVersion>-s<schema>.db.
// It is built into a temporary file and renamed when complete, so an
// interrupted build is never mistaken for a store.

const (
	benchStoreVersion = 6
	benchHours        = 6
	benchPerHour      = 1_000_000
	benchFuncs        = 200
	benchSessions     = 2
)

var benchBase = time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)

// benchClock is "now" for the benchmark store: the last minute of the
// last hour, which is therefore still open.
var benchClock = benchBase.Add(benchHours*time.Hour - time.Minute)

func benchFuncName(i int) string {
	mod := []string{"github.com/acme/api", "github.com/acme/lib", "google.golang.org/grpc", "example.com/store"}[i%4]
	return fmt.Sprintf("%s/pkg%02d.(*Server).Handler%03d", mod, i%20, i)
}

// benchStorePath returns the cached benchmark store, building it if needed.
func benchStorePath(tb testing.TB) string {
	tb.Helper()
	path := os.Getenv("OBS_BENCH_STORE")
	if path == "" {
		path = filepath.Join(os.TempDir(), "obs-agent-bench", fmt.Sprintf("store-v%d-s%d.db", benchStoreVersion, store.SchemaVersion))
	}
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		tb.Fatal(err)
	}
	tmp := path + ".building"
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(tmp + suffix)
	}
	start := time.Now()
	buildBenchStore(tb, tmp)
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("built the benchmark store %s in %v", path, time.Since(start).Round(time.Second))
	return path
}

// callGen generates the calls of one session in entry order (ids rise
// with start times, as the agent's per-session sequence does).
type callGen struct {
	rng   *rand.Rand
	sess  uint64
	seq   uint64
	pid   uint32
	goids uint64
	fns   []string
	out   []record.Call
}

func (g *callGen) id() uint64 { g.seq++; return g.sess<<40 | g.seq }

// tree appends a call tree rooted at depth with the given parent, starting
// at *t, and returns the root's end. fan makes a fan-out request.
func (g *callGen) tree(depth int, parent, goid uint64, t *int64, fan bool) int64 {
	id := g.id()
	start := *t
	*t += 100 + int64(g.rng.IntN(400))
	fn := g.fns[(depth*20+g.rng.IntN(20))%(len(g.fns)-1)]
	if fan && depth == 0 {
		fn = g.fns[len(g.fns)-1] // fan-out roots, and only they, run the last function
	}
	var kids int
	switch {
	case fan && depth < 3:
		kids = 10
	case depth >= 9:
	case depth < 2:
		kids = 1 + g.rng.IntN(2)
	default:
		kids = g.rng.IntN(2) + g.rng.IntN(2)*g.rng.IntN(2)
	}
	end := *t
	for k := 0; k < kids; k++ {
		kg := goid
		spawned := g.rng.IntN(15) == 0
		if spawned {
			g.goids++
			kg = g.goids
		}
		kend := g.tree(depth+1, id, kg, t, fan && depth < 2)
		if !spawned { // a spawned goroutine may outlive its parent
			end = max(end, kend)
		}
	}
	end = max(end, *t) + int64(g.rng.IntN(300))
	c := record.Call{ID: id, ParentID: parent, PID: g.pid, GoID: goid, Function: fn, Start: start, Duration: end - start}
	switch r := g.rng.IntN(1000); {
	case r < 9:
		c.Status, c.ErrorType, c.Error = record.StatusError, "*fmt.wrapError", fmt.Sprintf("query user %d: connection reset by peer", g.rng.IntN(1e6))
	case r < 10:
		c.Status, c.ErrorType, c.Error = record.StatusPanic, "runtime.Error", "runtime error: index out of range [3] with length 3"
	}
	g.out = append(g.out, c)
	return end
}

func buildBenchStore(tb testing.TB, path string) {
	tb.Helper()
	now := benchBase
	clock := func() time.Time { return now }
	s, err := store.Open(path, store.Options{Clock: clock})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { s.Close() }()
	fns := make([]string, benchFuncs)
	var reg []record.Function
	for i := range fns {
		fns[i] = benchFuncName(i)
		reg = append(reg, record.Function{Name: fns[i], Package: record.PackageOf(fns[i]), Module: fns[i][:len(fns[i])-len("/pkg00.(*Server).Handler000")]})
	}
	if err := s.RegisterFunctions(reg); err != nil {
		tb.Fatal(err)
	}
	gens := make([]*callGen, benchSessions)
	for i := range gens {
		sid, err := s.BeginSession(record.Session{PID: uint32(4242 + i), Binary: "/srv/api", GoVersion: "go1.26.0", Patterns: "github.com/*", Start: benchBase.UnixNano()})
		if err != nil {
			tb.Fatal(err)
		}
		gens[i] = &callGen{rng: rand.New(rand.NewPCG(uint64(i), 99)), sess: sid, pid: uint32(4242 + i), goids: 100, fns: fns}
	}
	ctx := context.Background()
	for h := 0; h < benchHours; h++ {
		hour := benchBase.Add(time.Duration(h) * time.Hour)
		now = hour.Add(30 * time.Minute)
		for gi, g := range gens {
			// Requests evenly over the hour until the session's share.
			t := hour.UnixNano() + int64(gi)*1000
			per := benchPerHour / benchSessions
			g.out = g.out[:0]
			n := 0
			for len(g.out) < per {
				g.goids++
				tt := t
				g.tree(0, 0, g.goids, &tt, n%400 == 7)
				n++
				// ~14 calls per request on average (a fan-out has
				// ~5,000): spread the
				// requests so the session fills the hour.
				t += int64(time.Hour) / int64(per/16+1)
			}
			calls := g.out[:per]
			// Stretch the starts over the whole hour (the request
			// spacing above is an estimate); order is kept.
			var last int64
			for i := range calls {
				last = max(last, calls[i].Start)
			}
			scale := float64(time.Hour-time.Second) / float64(last-hour.UnixNano())
			for i := range calls {
				calls[i].Start = hour.UnixNano() + int64(float64(calls[i].Start-hour.UnixNano())*scale)
			}
			// The agent writes calls as they end, in batches.
			for i := 0; i < len(calls); i += 5000 {
				if err := s.WriteCalls(calls[i:min(i+5000, len(calls))]); err != nil {
					tb.Fatal(err)
				}
			}
		}
		var st []record.FuncStats
		var samples []record.ResourceSample
		for m := 0; m < 60; m++ {
			iv := hour.Add(time.Duration(m) * time.Minute)
			for p := 0; p < benchSessions; p++ {
				for f, name := range fns {
					r := record.FuncStats{PID: uint32(4242 + p), Function: name, IntervalStart: iv.UnixNano(), IntervalEnd: iv.Add(time.Minute).UnixNano(),
						Calls: uint64(40 + f%7), Errors: uint64(f % 3), Panics: uint64(f % 11 / 10), Recorded: uint64(40 + f%7), TotalNs: uint64((40 + f%7) * 3000), MaxNs: uint64(20000 + f)}
					r.Hist[10] = uint64(30 + f%7)
					r.Hist[12] = 10
					st = append(st, r)
				}
			}
			for sec := 0; sec < 60; sec += 5 {
				for p := 0; p < benchSessions; p++ {
					cpu, rss, thr := 12.5+float64(sec), uint64(300<<20+m<<10), int64(20+p)
					samples = append(samples, record.ResourceSample{PID: uint32(4242 + p), Time: iv.Add(time.Duration(sec) * time.Second).UnixNano(),
						CPUPercent: &cpu, RSSBytes: &rss, Threads: &thr, Goroutines: &thr})
				}
			}
		}
		if err := s.WriteStats(st); err != nil {
			tb.Fatal(err)
		}
		if err := s.WriteSamples(samples); err != nil {
			tb.Fatal(err)
		}
		if err := s.WriteGaps([]record.Gap{{PID: 4242, Function: fns[h], Start: hour.Add(17 * time.Minute).UnixNano(), End: hour.Add(19 * time.Minute).UnixNano(), Reason: "overload"}}); err != nil {
			tb.Fatal(err)
		}
		// Writing flat out, the checkpointer never finds the WAL idle
		// and it grows by gigabytes; Close checkpoints and truncates it.
		if err := s.Close(); err != nil {
			tb.Fatal(err)
		}
		if s, err = store.Open(path, store.Options{Clock: clock}); err != nil {
			tb.Fatal(err)
		}
	}
	now = benchClock
	rep, err := s.BuildDerived(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("benchmark store: built %d side structures in %d steps, longest step %v", len(rep.Done), rep.Steps, rep.Max)
}
