package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestWriteCallsRowKinds: WriteCalls sorts a batch by id and, when fewer
// than one row in splitBelow is not a plain ok call, inserts the ok rows
// and the others (errors, panics, unfinished calls, truncated texts)
// through statements of different shapes, each run when full and at the
// end of the batch; with more others, all rows take the full shape.
// Every column of every row must come back as written, whatever the
// batch's order, its mix of kinds and the hours it spans, and the
// caller's slice must be left as it was.
func TestWriteCallsRowKinds(t *testing.T) {
	s, _ := openTest(t, fixedClock(t0.Add(90*time.Minute)))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	var want []record.Call
	// 3,000 calls with 8% others (the split path: several statements of
	// each shape, and tails of 10s and 1s), then 1,234 with 40% (the
	// full shape for all).
	for session, mix := range []struct{ n, othersPct int }{{3000, 8}, {1234, 40}} {
		var calls []record.Call
		for i := range mix.n {
			c := record.Call{
				ID:       uint64(session+1)<<40 + uint64(i) + 1,
				PID:      uint32(100 + rng.IntN(3)),
				GoID:     uint64(rng.IntN(1000)),
				Function: fmt.Sprintf("main.f%d", rng.IntN(7)),
				// Two hours: the batch splits into two partitions.
				Start:    t0.Add(time.Duration(i) * 4 * time.Second).UnixNano(),
				Duration: int64(rng.IntN(1e9)),
			}
			if i > 0 && rng.IntN(3) != 0 {
				c.ParentID = calls[rng.IntN(i)].ID
			}
			if rng.IntN(100) < mix.othersPct {
				switch rng.IntN(4) {
				case 0:
					c.Status, c.ErrorType, c.Error = record.StatusError, "*errors.errorString", fmt.Sprintf("failed %d", i)
				case 1:
					c.Status, c.Error, c.ErrorTruncated = record.StatusPanic, "boom", true
				case 2:
					c.Status = record.StatusUnfinished
				default: // an ok call with a truncation flag alone takes the full shape too
					c.ErrorTruncated = true
				}
			}
			calls = append(calls, c)
		}
		want = append(want, calls...)
		// The agent's order: errors first, then the rest, neither by id.
		batch := slices.Clone(calls)
		rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		slices.SortStableFunc(batch, func(a, b record.Call) int {
			return int(b.Status) - int(a.Status)
		})
		given := slices.Clone(batch)
		if err := s.WriteCalls(batch); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(batch, given) {
			t.Error("WriteCalls reordered or changed the caller's slice")
		}
	}
	n := len(want)
	ids := make([]uint64, n)
	for i := range want {
		ids[i] = want[i].ID
	}
	got, err := s.CallsByID(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("read %d of %d calls back", len(got), n)
	}
	for _, w := range want {
		if g := got[w.ID]; g != w {
			t.Errorf("call %d:\n got %+v\nwant %+v", w.ID, g, w)
		}
	}
	// A batch of errors only (a journal replay) takes the 100-row
	// statements of the full shape.
	only := make([]record.Call, 234)
	for i := range only {
		only[i] = record.Call{ID: 3<<40 + uint64(i) + 1, PID: 7, GoID: 3, Function: "main.replay",
			Start: t0.Add(time.Duration(i) * time.Second).UnixNano(), Duration: int64(i),
			Status: record.StatusError, ErrorType: "*fs.PathError", Error: fmt.Sprintf("open f%d: denied", i)}
		want = append(want, only[i])
		ids = append(ids, only[i].ID)
	}
	if err := s.WriteCalls(only); err != nil {
		t.Fatal(err)
	}
	if got, err = s.CallsByID(ctx, ids); err != nil {
		t.Fatal(err)
	}
	for _, w := range want[n:] {
		if g := got[w.ID]; g != w {
			t.Errorf("call %d:\n got %+v\nwant %+v", w.ID, g, w)
		}
	}
	// The error lane holds exactly the calls that are not ok.
	errs, err := s.Errors(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var nonOK int
	for _, w := range want {
		if w.Status != record.StatusOK {
			nonOK++
		}
	}
	if len(errs) != nonOK {
		t.Errorf("Errors: %d calls, want %d", len(errs), nonOK)
	}
	for _, e := range errs {
		if e.Status == record.StatusOK || got[e.ID] != e {
			t.Errorf("Errors returned %+v", e)
		}
	}
}
