package query

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/result"
	"github.com/obs-agent/obs-agent/internal/store"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func TestLayer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "obs.db")
	s, err := store.Open(path, store.Options{Clock: func() time.Time { return t0.Add(30 * time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.RegisterFunctions([]record.Function{
		{Name: "main.main", Package: "main", Module: "example.com/app"},
		{Name: "main.(*T).Get", Package: "main", Module: "example.com/app"},
		{Name: "lib/x.Do", Package: "lib/x", Module: "lib"},
	}); err != nil {
		t.Fatal(err)
	}
	base := uint64(1) << 40
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	calls := []record.Call{
		{ID: base + 1, PID: 42, GoID: 1, Function: "main.main", Start: at(time.Minute), Duration: 5e9},
		{ID: base + 2, ParentID: base + 1, PID: 42, GoID: 1, Function: "main.(*T).Get", Start: at(time.Minute + time.Second), Duration: 1000, Status: record.StatusError, Error: "not found"},
		{ID: base + 3, ParentID: base + 2, PID: 42, GoID: 7, Function: "lib/x.Do", Start: at(time.Minute + 2*time.Second), Duration: 10, Status: record.StatusPanic, Error: "boom"},
		{ID: base + 4, ParentID: base + 1, PID: 42, GoID: 1, Function: "main.(*T).Get", Start: at(time.Minute + 500*time.Millisecond), Duration: 2000},
		{ID: base + 5, ParentID: base + 99, PID: 42, GoID: 3, Function: "lib/x.Do", Start: at(2 * time.Minute), Duration: 1, Status: record.StatusError, Error: "orphan"},
	}
	if err := s.WriteCalls(calls); err != nil {
		t.Fatal(err)
	}
	q := New(s)

	chain, err := q.Ancestors(ctx, base+3)
	if err != nil || len(chain) != 3 || chain[0].ID != base+1 || chain[1].ID != base+2 || chain[2].ID != base+3 {
		t.Errorf("Ancestors = %+v, %v", chain, err)
	}
	tree, err := q.Tree(ctx, base+1, 0)
	if err != nil || tree.Truncated {
		t.Fatal(tree, err)
	}
	// Children oldest first: 4 started before 2.
	wantIDs, wantDepth := []uint64{1, 4, 2, 3}, []int{0, 1, 1, 2}
	if len(tree.Calls) != 4 {
		t.Fatalf("tree has %d calls", len(tree.Calls))
	}
	for i := range tree.Calls {
		if tree.Calls[i].ID-base != wantIDs[i] || tree.Depth[i] != wantDepth[i] {
			t.Errorf("tree[%d] = %d at depth %d, want %d at %d", i, tree.Calls[i].ID-base, tree.Depth[i], wantIDs[i], wantDepth[i])
		}
	}
	if tr, _ := q.Tree(ctx, base+1, 2); !tr.Truncated || len(tr.Calls) != 2 || tr.Calls[1].ID != base+2 {
		t.Errorf("tree limit 2 = %+v (wants the first child entered, 2)", tr)
	}

	errs, err := q.Errors(ctx, Filter{})
	if err != nil || len(errs) != 3 {
		t.Fatalf("Errors = %+v, %v", errs, err)
	}
	if errs[0].Call.ID != base+5 || len(errs[0].Chain) != 0 {
		t.Errorf("orphan error: %+v (its parent is not stored: empty chain)", errs[0])
	}
	if errs[1].Call.ID != base+3 || len(errs[1].Chain) != 2 || errs[1].Chain[0].ID != base+1 || errs[1].Chain[1].ID != base+2 {
		t.Errorf("panic chain: %+v", errs[1])
	}
	if errs[2].Call.ID != base+2 || len(errs[2].Chain) != 1 || errs[2].Chain[0].ID != base+1 {
		t.Errorf("error chain: %+v", errs[2])
	}

	var h [record.HistBuckets]uint64
	h[10] = 90
	h[20] = 10
	if err := s.WriteStats([]record.FuncStats{
		{PID: 42, Function: "main.(*T).Get", IntervalStart: at(time.Minute), IntervalEnd: at(2 * time.Minute), Calls: 60, Errors: 3, Recorded: 50, Sampled: 5, Dropped: 5, TotalNs: 6000, MaxNs: 900000, Hist: h},
		{PID: 42, Function: "main.(*T).Get", IntervalStart: at(2 * time.Minute), IntervalEnd: at(3 * time.Minute), Calls: 40, Panics: 1, Recorded: 40, TotalNs: 4000, MaxNs: 1000},
		{PID: 43, Function: "main.main", IntervalStart: at(time.Minute), IntervalEnd: at(2 * time.Minute), Calls: 1, Recorded: 1, TotalNs: 5e9, MaxNs: 5e9},
		{PID: 42, Function: "lib/x.Do", IntervalStart: at(time.Minute), IntervalEnd: at(2 * time.Minute), Calls: 7, Recorded: 7, TotalNs: 70, MaxNs: 10},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteGaps([]record.Gap{{PID: 42, Function: "main.(*T).Get", Start: at(4 * time.Minute), End: at(5 * time.Minute), Reason: "overload"}}); err != nil {
		t.Fatal(err)
	}
	rows, gaps, err := q.Stats(ctx, Filter{}, result.ByFunction)
	if err != nil || len(rows) != 3 || len(gaps) != 1 {
		t.Fatalf("Stats = %+v, %v, %v", rows, gaps, err)
	}
	r := rows[0]
	if r.Key != "main.(*T).Get" || r.Calls != 100 || r.Errors != 3 || r.Panics != 1 || r.Lost() != 10 || r.MeanNs != 100 || r.MaxNs != 900000 {
		t.Errorf("Stats row = %+v", r)
	}
	if r.P50 != 1023 || r.P90 != 1023 || r.P99 != 900000 {
		t.Errorf("percentiles = %d %d %d, want 1023 1023 900000", r.P50, r.P90, r.P99)
	}
	if r.Gaps != 1 || r.GapTime != time.Minute {
		t.Errorf("gaps = %d %v", r.Gaps, r.GapTime)
	}
	mods, _, err := q.Stats(ctx, Filter{}, result.ByModule)
	if err != nil || len(mods) != 2 || mods[0].Key != "example.com/app" || mods[0].Calls != 101 || mods[1].Key != "lib" || mods[1].Calls != 7 {
		t.Errorf("Stats by module = %+v, %v", mods, err)
	}
	pk, _, err := q.Stats(ctx, Filter{PID: 42, Limit: 1}, result.ByPackage)
	if err != nil || len(pk) != 1 || pk[0].Key != "main" || pk[0].Calls != 100 {
		t.Errorf("Stats by package, pid 42, limit 1 = %+v, %v", pk, err)
	}
}

// TestRetentionSettings: the settings of the running agents win over the
// ended ones'; with none running, the newest session's alone; sessions
// that did not record theirs (0) are passed over.
func TestRetentionSettings(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	q := New(s)
	begin := func(sess record.Session) uint64 {
		t.Helper()
		id, err := s.BeginSession(sess)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	settings := func() []result.RetentionSetting {
		t.Helper()
		got, err := q.RetentionSettings(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := settings(); len(got) != 0 {
		t.Errorf("empty store: %+v, want none", got)
	}
	old := begin(record.Session{PID: 1, Start: 1}) // an older agent: unknown
	if got := settings(); len(got) != 0 {
		t.Errorf("a session without settings: %+v, want none", got)
	}
	a := begin(record.Session{PID: 2, Start: 2, Retention: 24 * time.Hour, ArchiveDir: "/srv/a"})
	b := begin(record.Session{PID: 3, Start: 3, Retention: 2 * time.Hour})
	want := []result.RetentionSetting{{Session: a, Running: true, Window: 24 * time.Hour, ArchiveDir: "/srv/a"}, {Session: b, Running: true, Window: 2 * time.Hour}}
	if got := settings(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("two running: %+v, want %+v", got, want)
	}
	for _, id := range []uint64{b, old} {
		if err := s.EndSession(record.Session{ID: id, End: 10}); err != nil {
			t.Fatal(err)
		}
	}
	want = want[:1]
	if got := settings(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("one running: %+v, want %+v", got, want)
	}
	if err := s.EndSession(record.Session{ID: a, End: 11}); err != nil {
		t.Fatal(err)
	}
	want = []result.RetentionSetting{{Session: b, Window: 2 * time.Hour}}
	if got := settings(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("none running: %+v, want the newest session's %+v", got, want)
	}
}

// openStore opens a new writable store, closed at the end of the test.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), "obs.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
