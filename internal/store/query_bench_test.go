package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// fillBig writes one hour of 1M calls, spread evenly over the hour.
func fillBig(b *testing.B) (string, time.Time) {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	path := filepath.Join(b.TempDir(), "big.db")
	s, err := Open(path, Options{Clock: func() time.Time { return base }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	calls := genCalls(rng, 1<<40, base, 1_000_000)
	for i := range calls {
		calls[i].Start = base.UnixNano() + int64(i)*3_600_000
	}
	for i := 0; i < len(calls); i += 10000 {
		if err := s.WriteCalls(calls[i : i+10000]); err != nil {
			b.Fatal(err)
		}
	}
	return path, base
}

// BenchmarkCallsQuery measures the read paths on a 1M-call hour (no
// secondary indexes). Measured on the 2-core dev VM: last10m-limit100
// 173 ms, errors-limit100 611 ms, call-by-id 0.8 ms, children 110 ms,
// subtree 725 ms.
func BenchmarkCallsQuery(b *testing.B) {
	path, base := fillBig(b)
	s, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	b.Run("last10m-limit100", func(b *testing.B) {
		for b.Loop() {
			cs, err := s.Calls(ctx, Filter{Since: base.Add(50 * time.Minute), Limit: 100})
			if err != nil || len(cs) != 100 {
				b.Fatal(err, len(cs))
			}
		}
	})
	b.Run("errors-limit100", func(b *testing.B) {
		for b.Loop() {
			cs, err := s.Errors(ctx, Filter{Limit: 100})
			if err != nil || len(cs) != 100 {
				b.Fatal(err, len(cs))
			}
		}
	})
	b.Run("call-by-id", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Call(ctx, 1<<40+500_000); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("children", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Children(ctx, 1<<40+500_000); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("subtree", func(b *testing.B) {
		for b.Loop() {
			root, err := s.Call(ctx, 1<<40+500_000)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := s.Descendants(ctx, root, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStatsSixHours answers `query stats --since 6h` over six hours of
// aggregates: 200 functions, one row each per 1-minute interval (72,000
// rows), which is what an agent writes in that time with the default
// --stats-interval. It reads the stats partitions only, never the calls.
// Measured on the 2-core VM: 10 s intervals (432,000 rows) took 1.6 s under
// load, which is why the default interval is a minute.
func BenchmarkStatsSixHours(b *testing.B) {
	base := time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)
	path := filepath.Join(b.TempDir(), "stats.db")
	s, err := Open(path, Options{Clock: func() time.Time { return base }})
	if err != nil {
		b.Fatal(err)
	}
	const funcs, interval = 200, time.Minute
	var batch []record.FuncStats
	for t := base; t.Before(base.Add(6 * time.Hour)); t = t.Add(interval) {
		for f := 0; f < funcs; f++ {
			st := record.FuncStats{
				PID: 1, Function: fmt.Sprintf("main.f%03d", f),
				IntervalStart: t.UnixNano(), IntervalEnd: t.Add(interval).UnixNano(),
				Calls: 100, Errors: 1, Recorded: 100, TotalNs: 100 * 5000, MaxNs: 9000,
			}
			st.Hist[13] = 100
			batch = append(batch, st)
		}
		if len(batch) >= 20000 {
			if err := s.WriteStats(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := s.WriteStats(batch); err != nil {
		b.Fatal(err)
	}
	s.Close()
	r, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	for b.Loop() {
		rows, err := r.Stats(ctx, Filter{Since: base, Until: base.Add(6 * time.Hour)})
		if err != nil || len(rows) != funcs {
			b.Fatal(err, len(rows))
		}
		if rows[0].Calls != 100*6*60 {
			b.Fatalf("calls %d, want %d", rows[0].Calls, 100*6*60)
		}
	}
}
