package store

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
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
			if _, _, _, err := s.Subtree(ctx, 1<<40+500_000, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
