package store

import (
	"context"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestWatcher: the version stays while nothing is written and moves with
// each committed batch, from another Store (as an agent in another process
// writes) as from this one.
func TestWatcher(t *testing.T) {
	s, path := openTest(t, fixedClock(t0))
	ctx := context.Background()
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	for name, st := range map[string]*Store{"writer's Store": s, "read-only Store": ro} {
		w, err := st.Watch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v0, err := w.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := w.Version(ctx); v != v0 {
			t.Errorf("%s: version moved from %d to %d with no write", name, v0, v)
		}
		id := uint64(len(name))<<40 | 1
		if err := s.WriteCalls([]record.Call{{ID: id, Function: "main.f", Start: t0.UnixNano()}}); err != nil {
			t.Fatal(err)
		}
		v1, err := w.Version(ctx)
		if err != nil || v1 == v0 {
			t.Errorf("%s: version %d after a write, %d before (%v)", name, v1, v0, err)
		}
		if v, _ := w.Version(ctx); v != v1 {
			t.Errorf("%s: version moved from %d to %d with no write", name, v1, v)
		}
		w.Close()
	}
}
