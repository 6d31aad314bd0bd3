package store

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestInIDOrder checks inIDOrder against a comparison sort on batches as
// the agent hands them over (errors first, parents after their children:
// ids in a short range), on batches whose ids are far apart (the
// comparison sort's path), and on one with an id twice (never made by the
// agent; the comparison sort keeps both).
func TestInIDOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	agentBatch := func(n int, base uint64) []record.Call {
		ids := make([]uint64, n)
		for i := range ids {
			ids[i] = base + uint64(i)
		}
		// Local inversions: a parent returns after its children.
		for i := 0; i+3 < n; i += 1 + rng.IntN(4) {
			ids[i], ids[i+3] = ids[i+3], ids[i]
		}
		var errs, oks []record.Call
		for _, id := range ids {
			c := record.Call{ID: id, Function: "main.f"}
			if rng.IntN(20) == 0 {
				c.Status = record.StatusError
				errs = append(errs, c)
				continue
			}
			oks = append(oks, c)
		}
		return append(errs, oks...)
	}
	wide := func(n int) []record.Call {
		cs := make([]record.Call, n)
		for i := range cs {
			cs[i].ID = rng.Uint64N(1 << 50)
		}
		return cs
	}
	dup := agentBatch(100, 1<<40)
	dup[10].ID = dup[20].ID
	s := &Store{}
	for _, c := range []struct {
		name  string
		calls []record.Call
		place bool
	}{
		{"agent batch", agentBatch(5000, 7<<40|1), true},
		{"agent batch with a gap", append(agentBatch(3000, 1<<40), agentBatch(2000, 1<<40|9000)...), true},
		{"one call", agentBatch(1, 5), true},
		{"wide ids", wide(5000), false},
		{"an id twice", dup, false},
	} {
		want := slices.Clone(c.calls)
		slices.SortStableFunc(want, func(a, b record.Call) int {
			switch {
			case a.ID < b.ID:
				return -1
			case a.ID > b.ID:
				return 1
			}
			return 0
		})
		_, placed := s.placeByID(c.calls)
		if placed != c.place {
			t.Errorf("%s: placed by id %v, want %v", c.name, placed, c.place)
		}
		got := s.inIDOrder(c.calls)
		if len(got) != len(want) {
			t.Fatalf("%s: %d calls, want %d", c.name, len(got), len(want))
		}
		for i := range got {
			if got[i].ID != want[i].ID || got[i].Status != want[i].Status {
				t.Fatalf("%s: call %d is %d (%v), want %d (%v)", c.name, i, got[i].ID, got[i].Status, want[i].ID, want[i].Status)
			}
		}
		s.clearSorted()
	}
}

// BenchmarkInIDOrder sorts an agent-like batch of 5,000 calls.
func BenchmarkInIDOrder(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	calls := make([]record.Call, 5000)
	for i := range calls {
		calls[i].ID = 1<<40 + uint64(i)
	}
	for i := 0; i+3 < len(calls); i += 1 + rng.IntN(4) {
		calls[i], calls[i+3] = calls[i+3], calls[i]
	}
	s := &Store{}
	b.ReportAllocs()
	for b.Loop() {
		s.inIDOrder(calls)
		s.clearSorted()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(calls)), "ns/record")
}
