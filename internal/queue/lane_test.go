package queue

import (
	"math/rand/v2"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestLane: random pushes, takes and requeues give the records of a
// plain slice, in order, across chunk boundaries; emptied slots hold no
// strings; the spare chunks stay bounded.
func TestLane(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var l lane
	var model []record.Call
	next := uint64(1)
	for step := range 3000 {
		switch op := rng.IntN(10); {
		case op < 6: // a burst of pushes
			for range rng.IntN(2 * chunkLen) {
				c := record.Call{ID: next, Function: "f"}
				next++
				l.push(&c)
				model = append(model, c)
			}
		case op < 9:
			m := rng.IntN(5 * chunkLen)              // about as many as pushed: the lane stays within a few chunks
			got := l.take([]record.Call{{ID: 0}}, m) // dst's own record stays first
			want := model[:min(m, len(model))]
			model = model[len(want):]
			if len(got) != len(want)+1 || got[0].ID != 0 {
				t.Fatalf("step %d: take %d gave %d records, want %d", step, m, len(got)-1, len(want))
			}
			for i := range want {
				if got[i+1].ID != want[i].ID {
					t.Fatalf("step %d: record %d is %d, want %d", step, i, got[i+1].ID, want[i].ID)
				}
			}
			if rng.IntN(4) == 0 { // the batch failed: back to the front
				l.pushFront(got[1:])
				model = append(append([]record.Call(nil), got[1:]...), model...)
			}
		default:
			var seen []uint64
			l.each(func(c *record.Call) { seen = append(seen, c.ID) })
			if len(seen) != len(model) {
				t.Fatalf("step %d: each saw %d records, want %d", step, len(seen), len(model))
			}
			for i := range seen {
				if seen[i] != model[i].ID {
					t.Fatalf("step %d: each's record %d is %d, want %d", step, i, seen[i], model[i].ID)
				}
			}
		}
		if l.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, l.len(), len(model))
		}
		if len(l.spare) > maxSpare {
			t.Fatalf("step %d: %d spare chunks", step, len(l.spare))
		}
	}
	for _, c := range l.spare {
		for _, r := range c[:cap(c)] {
			if r.Function != "" {
				t.Fatal("a spare chunk still holds a record's strings")
			}
		}
	}
}
