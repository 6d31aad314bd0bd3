package agent

import (
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// collect is a resolver's emit that keeps each record's root.
type collect map[uint64]uint64

func (c collect) emit(rs []record.Call) {
	for _, r := range rs {
		if _, dup := c[r.ID]; dup {
			panic("record emitted twice")
		}
		c[r.ID] = r.TraceRoot
	}
}

// TestRootResolver: records arrive as calls return (children before their
// parents, goroutines interleaved); each is emitted once, with the root
// of its tree, as soon as the chain up to a root is known.
func TestRootResolver(t *testing.T) {
	got := collect{}
	r := newRootResolver(time.Hour, got.emit)
	// Tree: 1 → 2 → 3, 2 → 4 (on another goroutine, outliving 2); 10 alone.
	r.add(record.Call{ID: 3, ParentID: 2})
	r.add(record.Call{ID: 10})
	if len(got) != 1 || got[10] != 10 || r.held() != 1 {
		t.Fatalf("emitted %v, held %d; want only the root 10, 3 held", got, r.held())
	}
	r.add(record.Call{ID: 2, ParentID: 1})
	if len(got) != 1 || r.held() != 2 {
		t.Fatalf("emitted %v, held %d before the root came", got, r.held())
	}
	r.add(record.Call{ID: 1})
	r.add(record.Call{ID: 4, ParentID: 2}) // its parent returned long ago
	want := collect{1: 1, 2: 1, 3: 1, 4: 1, 10: 10}
	if len(got) != len(want) || r.held() != 0 {
		t.Fatalf("emitted %v, held %d; want %v", got, r.held(), want)
	}
	for id, root := range want {
		if got[id] != root {
			t.Errorf("call %d: root %d, want %d", id, got[id], root)
		}
	}
}

// TestRootResolverHold: under an ancestor that is still running past the
// hold, records are released with that ancestor as their (provisional)
// root, which the ancestor's own record then takes too, so the subtree
// stays one trace; the end of the trace releases everything held.
func TestRootResolverHold(t *testing.T) {
	got := collect{}
	r := newRootResolver(time.Second, got.emit)
	t0 := time.Now()
	r.add(record.Call{ID: 5, ParentID: 4}) // 4 is a server loop, child of 1
	r.add(record.Call{ID: 6, ParentID: 5})
	r.expire(t0.Add(time.Millisecond), false)
	if len(got) != 0 {
		t.Fatalf("released %v before the hold", got)
	}
	r.expire(t0.Add(2*time.Second), false)
	if got[5] != 4 || got[6] != 4 || r.held() != 0 {
		t.Fatalf("after the hold: %v, held %d; want 5 and 6 under 4", got, r.held())
	}
	r.add(record.Call{ID: 7, ParentID: 4})
	r.add(record.Call{ID: 4, ParentID: 1})
	if got[7] != 4 || got[4] != 4 {
		t.Errorf("later calls of the subtree: %v; want root 4 for 7 and 4", got)
	}
	r.add(record.Call{ID: 9, ParentID: 8})
	r.expire(time.Now(), true)
	if got[9] != 8 || r.held() != 0 {
		t.Errorf("end of trace: %v, held %d", got, r.held())
	}
}

// TestRootResolverBound: past maxHeld records waiting, the oldest wait is
// released at once, so memory stays bounded whatever the tree.
func TestRootResolverBound(t *testing.T) {
	got := collect{}
	r := newRootResolver(time.Hour, got.emit)
	for i := range uint64(maxHeld + 10) {
		r.add(record.Call{ID: 1_000_000 + i, ParentID: 1 + i}) // every parent distinct and unseen
	}
	if r.held() > maxHeld {
		t.Fatalf("%d held, bound %d", r.held(), maxHeld)
	}
	if len(got) != 10 || got[1_000_000] != 1 {
		t.Errorf("released %d records (first's root %d), want the 10 oldest", len(got), got[1_000_000])
	}
}

// TestRootResolverMemo: a goroutine's call that returns after its
// spawning call's record finds the root in the memo while fewer than
// rootMemo calls of the session came between; with two sessions' calls
// interleaved, after a quarter of that from each.
func TestRootResolverMemo(t *testing.T) {
	got := collect{}
	r := newRootResolver(time.Hour, got.emit)
	s1, s2 := uint64(1)<<40, uint64(2)<<40
	r.add(record.Call{ID: s1 + 1})                   // a root
	r.add(record.Call{ID: s1 + 2, ParentID: s1 + 1}) // spawned a goroutine, returned
	r.add(record.Call{ID: s2 + 2})                   // another session's root, same sequence
	for i := range uint64(rootMemo / 4) {            // both sessions' floods
		r.add(record.Call{ID: s1 + 100 + i})
		r.add(record.Call{ID: s2 + 100 + i})
	}
	r.add(record.Call{ID: s1 + 3, ParentID: s1 + 2}) // the goroutine's call
	r.add(record.Call{ID: s2 + 3, ParentID: s2 + 2})
	if got[s1+3] != s1+1 || got[s2+3] != s2+2 || r.held() != 0 {
		t.Fatalf("late calls' roots %d and %d (held %d), want %d and %d", got[s1+3], got[s2+3], r.held(), s1+1, s2+2)
	}
	// One session: its last rootMemo calls.
	got = collect{}
	r = newRootResolver(time.Hour, got.emit)
	r.add(record.Call{ID: s1 + 1})
	r.add(record.Call{ID: s1 + 2, ParentID: s1 + 1})
	for i := range uint64(rootMemo - 200) { // ids up to 2+rootMemo-100: s1+2 keeps its slot
		r.add(record.Call{ID: s1 + 100 + i})
	}
	r.add(record.Call{ID: s1 + 3, ParentID: s1 + 2})
	if got[s1+3] != s1+1 || r.held() != 0 {
		t.Fatalf("one session: the late call's root %d (held %d), want %d", got[s1+3], r.held(), s1+1)
	}
}
