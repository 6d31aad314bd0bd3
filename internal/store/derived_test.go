package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// derivedFixture writes three hours of two interleaved sessions (trees,
// spawned goroutines, errors, panics, unfinished calls) and their stats.
// Each hour's data is written while the clock is in that hour, the way an
// agent writes it.
func derivedFixture(t *testing.T) (*Store, *atomic.Int64, []record.Call) {
	t.Helper()
	var now atomic.Int64
	now.Store(t0.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()).UTC() }
	s, err := Open(filepath.Join(t.TempDir(), "obs.db"), Options{Clock: clock, NoBackgroundBuild: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rng := rand.New(rand.NewPCG(7, 8))
	var all []record.Call
	for h := 0; h < 3; h++ {
		hour := t0.Add(time.Duration(h) * time.Hour)
		now.Store(hour.Add(30 * time.Minute).UnixNano())
		for sess := uint64(1); sess <= 2; sess++ {
			calls := genCalls(rng, sess<<40|uint64(h*3000+1), hour.Add(time.Duration(sess)*time.Second), 3000)
			for i := range calls {
				// Spread over the hour so many minutes have spans.
				calls[i].Start = hour.UnixNano() + int64(i)*int64(time.Hour)/3000 + int64(sess)
				switch rng.IntN(40) {
				case 0:
					calls[i].Status, calls[i].Error = record.StatusPanic, "boom"
				case 1:
					calls[i].Status = record.StatusUnfinished
				}
				if calls[i].ParentID != 0 && rng.IntN(10) == 0 {
					calls[i].GoID += 1000 // a spawned goroutine's call
				}
			}
			for i := 0; i < len(calls); i += 700 {
				if err := s.WriteCalls(calls[i:min(i+700, len(calls))]); err != nil {
					t.Fatal(err)
				}
			}
			all = append(all, calls...)
		}
		var st []record.FuncStats
		for m := 0; m < 60; m += 5 {
			for f := 0; f < 4; f++ {
				r := record.FuncStats{PID: uint32(4242 + f%2), Function: fmt.Sprintf("github.com/acme/api/pkg%02d.(*Server).Handler%03d", f, f),
					IntervalStart: hour.Add(time.Duration(m) * time.Minute).UnixNano(), IntervalEnd: hour.Add(time.Duration(m+5) * time.Minute).UnixNano(),
					Calls: uint64(10 + m + f), Errors: uint64(f), Recorded: uint64(10 + m), Sampled: uint64(f), TotalNs: uint64(1000 * (m + 1)), MaxNs: uint64(100 * (m + f))}
				r.Hist[5+f] = uint64(m + 1)
				st = append(st, r)
			}
		}
		if err := s.WriteStats(st); err != nil {
			t.Fatal(err)
		}
	}
	return s, &now, all
}

// answers runs every read the query layer uses and returns the results.
func answers(t *testing.T, s *Store, all []record.Call) map[string]any {
	t.Helper()
	ctx := context.Background()
	out := map[string]any{}
	add := func(name string, v any, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = v
	}
	fn := all[17].Function
	filters := map[string]Filter{
		"all":            {},
		"limit":          {Limit: 100},
		"range":          {Since: t0.Add(50 * time.Minute), Until: t0.Add(70 * time.Minute)},
		"range-limit":    {Since: t0.Add(50 * time.Minute), Limit: 37},
		"func":           {Func: fn},
		"func-range":     {Func: fn, Since: t0.Add(80 * time.Minute), Limit: 20},
		"errors":         {Status: []record.Status{record.StatusError, record.StatusPanic}},
		"panic-limit":    {Status: []record.Status{record.StatusPanic}, Limit: 5},
		"ok-pid-mindur":  {Status: []record.Status{record.StatusOK}, PID: 4242, MinDuration: time.Millisecond, Limit: 50},
		"glob":           {Func: "*pkg03*", Since: t0.Add(2 * time.Hour), Limit: 10},
		"mid-minute":     {Since: t0.Add(61*time.Minute + 13*time.Second), Until: t0.Add(61*time.Minute + 40*time.Second)},
		"errors-range":   {Since: t0.Add(90 * time.Minute), Until: t0.Add(150 * time.Minute), Limit: 30},
		"errors-session": {Func: "*Handler01*", Limit: 15},
		"mid-hours":      {Since: t0.Add(23 * time.Minute), Until: t0.Add(2*time.Hour + 37*time.Minute)},
		"mid-hour-pid":   {Since: t0.Add(65 * time.Minute), Until: t0.Add(119 * time.Minute), PID: 4243},
		"mid-hour-func":  {Since: t0.Add(7 * time.Minute), Until: t0.Add(41 * time.Minute), Func: "*pkg03*"},
	}
	for name, f := range filters {
		c, err := s.Calls(ctx, f)
		add("calls/"+name, c, err)
		e, err := s.Errors(ctx, f)
		add("errors/"+name, e, err)
		st, err := s.Stats(ctx, f)
		add("stats/"+name, st, err)
	}
	var ids []uint64
	for i := 0; i < len(all); i += 97 {
		ids = append(ids, all[i].ID)
	}
	ids = append(ids, 12345, 3<<40|1) // missing
	byID, err := s.CallsByID(ctx, ids)
	add("byid", byID, err)
	for _, i := range []int{0, 5, 3001, 9000, 17999} {
		if i >= len(all) {
			continue
		}
		c, err := s.Call(ctx, all[i].ID)
		if errors.Is(err, ErrNotFound) {
			out[fmt.Sprint("call/", i)] = "not found"
			continue
		}
		add(fmt.Sprint("call/", i), c, err)
		kids, err := s.Children(ctx, all[i].ID)
		add(fmt.Sprint("children/", i), kids, err)
		for _, limit := range []int{0, 3} {
			d, tr, err := s.Descendants(ctx, c, limit)
			add(fmt.Sprint("desc/", i, "/", limit), []any{d, tr}, err)
		}
	}
	return out
}

func compareAnswers(t *testing.T, what string, want, got map[string]any) {
	t.Helper()
	for k, w := range want {
		if !reflect.DeepEqual(w, got[k]) {
			t.Errorf("%s: %s differs from the scan's answer:\n got %v\nwant %v", what, k, got[k], w)
		}
	}
}

// TestDerivedMatchesScans checks that every read gives the same answer
// through the side structures as through plain scans: live (spans and
// error lane kept by the writer), after the closed hours are built, after
// an interrupted build, and after late rows reach a built hour.
func TestDerivedMatchesScans(t *testing.T) {
	s, now, all := derivedFixture(t)
	scan := func() map[string]any {
		s.ignoreDerived = true
		defer func() { s.ignoreDerived = false }()
		return answers(t, s, all)
	}
	want := scan()
	compareAnswers(t, "live hours", want, answers(t, s, all))
	if n := len(want["calls/all"].([]record.Call)); n != len(all) {
		t.Fatalf("fixture: %d calls stored, want %d", n, len(all))
	}

	// Close the first two hours; interrupt the build after a few steps.
	now.Store(t0.Add(2*time.Hour + 30*time.Minute).UnixNano())
	old := chunkRows
	chunkRows = 1000
	defer func() { chunkRows = old }()
	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	buildStepHook = func(time.Duration) {
		if steps++; steps == 5 {
			cancel()
		}
	}
	defer func() { buildStepHook = nil }()
	if _, err := s.BuildDerived(ctx); err == nil {
		t.Fatal("BuildDerived with a cancelled context: no error")
	}
	var building int
	s.rdb.QueryRow(`SELECT count(*) FROM derived WHERE state = 'building'`).Scan(&building)
	if building != 1 {
		t.Errorf("after the interrupted build: %d structures building, want 1", building)
	}
	compareAnswers(t, "interrupted build", want, answers(t, s, all))

	buildStepHook = nil
	rep, err := s.BuildDerived(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Hour 0's spans and error lane are live; its parent and func indexes
	// are the ones the interrupted pass started.
	wantDone := map[string]bool{}
	for _, h := range []string{"2026112710", "2026112711"} {
		for _, side := range []string{"parent", "func"} {
			wantDone["calls_"+h+"__"+side] = true
		}
		wantDone["stats_"+h+"__rollup"] = true
	}
	for _, n := range rep.Done {
		delete(wantDone, n)
	}
	for n := range wantDone {
		var st string
		s.rdb.QueryRow(`SELECT state FROM derived WHERE name = ?`, n).Scan(&st)
		if st != stateDone {
			t.Errorf("%s: %q after the second pass, want done", n, st)
		}
	}
	// 2 hours x (parent, func) x at least 6 chunks of 1,000 of 6,000
	// calls, minus the 5 steps of the interrupted pass.
	if rep.Steps < 2*2*6-5 {
		t.Errorf("%d build steps for 2 hours of 6,000 calls in chunks of 1,000: too few", rep.Steps)
	}
	compareAnswers(t, "built", want, answers(t, s, all))

	// Late rows into built hour 0: a call that started there and ended
	// now, a child of an old call, and a late stats interval.
	late := record.Call{ID: 1<<40 | 900000, ParentID: all[3].ID, PID: 4242, GoID: 5, Function: all[3].Function,
		Start: t0.Add(59 * time.Minute).UnixNano(), Duration: int64(2 * time.Hour), Status: record.StatusError, Error: "late"}
	// The open hour 2 was built up to its newest call: its indexes stay
	// "building", the writer keeps the ids below the cursor, readers scan
	// above it. Add calls on both sides of the cursor: one that entered
	// early and ended now (id below), and new ones (ids above, one a
	// child of an old call).
	var st string
	var cursor int64
	s.rdb.QueryRow(`SELECT state, next_id FROM derived WHERE name = 'calls_2026112712__parent'`).Scan(&st, &cursor)
	if st != stateBuilding || cursor <= int64(all[len(all)-1].ID) {
		t.Errorf("open hour's parent index: %q, cursor %d; want building past the newest id %d", st, cursor, all[len(all)-1].ID)
	}
	h2 := t0.Add(2 * time.Hour)
	early := record.Call{ID: 1<<40 | 9500, ParentID: 1<<40 | 6499, PID: 4242, GoID: 8, Function: all[5].Function,
		Start: h2.Add(3 * time.Minute).UnixNano(), Duration: int64(27 * time.Minute), Status: record.StatusPanic, Error: "late panic"}
	fresh := []record.Call{
		{ID: 2<<40 | 9001, ParentID: 2<<40 | 6500, PID: 4242, GoID: 9, Function: all[5].Function, Start: h2.Add(31 * time.Minute).UnixNano(), Duration: 5},
		{ID: 2<<40 | 9002, ParentID: all[len(all)-1].ID, PID: 4242, GoID: 9, Function: all[6].Function, Start: h2.Add(32 * time.Minute).UnixNano(), Duration: 5, Status: record.StatusError, Error: "x"},
	}
	if err := s.WriteCalls(append([]record.Call{late, early}, fresh...)); err != nil {
		t.Fatal(err)
	}
	all = append(append(all, late, early), fresh...)
	if err := s.WriteStats([]record.FuncStats{{PID: 4242, Function: all[3].Function, IntervalStart: t0.Add(59 * time.Minute).UnixNano(),
		IntervalEnd: t0.Add(61 * time.Minute).UnixNano(), Calls: 5, Errors: 5, Recorded: 5, TotalNs: 50, MaxNs: 5e9},
		// Above the open hour's rollup cursor.
		{PID: 4243, Function: all[4].Function, IntervalStart: h2.Add(31 * time.Minute).UnixNano(),
			IntervalEnd: h2.Add(32 * time.Minute).UnixNano(), Calls: 3, Panics: 1, Recorded: 3, TotalNs: 30, MaxNs: 20}}); err != nil {
		t.Fatal(err)
	}
	want = scan()
	compareAnswers(t, "late rows", want, answers(t, s, all))
	if got, err := s.Call(context.Background(), late.ID); err != nil || got != late {
		t.Errorf("late call: %+v, %v", got, err)
	}

	// Retention drops an hour with its side structures.
	if err := s.DropHour(context.Background(), t0, ""); err != nil {
		t.Fatal(err)
	}
	compareAnswers(t, "after drop, trash not emptied", scan(), answers(t, s, all))
	if _, _, err := s.EmptyTrash(context.Background()); err != nil {
		t.Fatal(err)
	}
	var left int
	s.rdb.QueryRow(`SELECT (SELECT count(*) FROM sqlite_master WHERE name LIKE '%2026112710%') + (SELECT count(*) FROM derived WHERE hour_ns = ?) + (SELECT count(*) FROM call_spans WHERE hour_ns = ?) + (SELECT count(*) FROM call_ranges WHERE hour_ns = ?)`,
		t0.UnixNano(), t0.UnixNano(), t0.UnixNano()).Scan(&left)
	if left != 0 {
		t.Errorf("%d tables or rows of the dropped hour left", left)
	}
	compareAnswers(t, "after drop", scan(), answers(t, s, all))
}

// TestBuildOpenHourWhileWriting: a pass over the open hour stops at the
// rows that existed when it began, even while a writer appends as fast as
// it can, and the answers stay those of a scan.
func TestBuildOpenHourWhileWriting(t *testing.T) {
	now := t0.Add(30 * time.Minute)
	s, err := Open(filepath.Join(t.TempDir(), "obs.db"), Options{Clock: func() time.Time { return now }, NoBackgroundBuild: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := chunkRows
	chunkRows = 500
	defer func() { chunkRows = old }()
	rng := rand.New(rand.NewPCG(5, 6))
	next := uint64(1<<40 | 1)
	var all []record.Call // read only once the writer has stopped
	write := func() error {
		calls := genCalls(rng, next, t0.Add(time.Duration(next&0xffff)*time.Millisecond), 500)
		next += 500
		all = append(all, calls...)
		return s.WriteCalls(calls)
	}
	for range 10 {
		if err := write(); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := write(); err != nil {
				done <- err
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err = s.BuildDerived(ctx)
	close(stop)
	if werr := <-done; werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatalf("BuildDerived while a writer appends: %v (it must stop at the rows it found)", err)
	}
	got := answers(t, s, all)
	s.ignoreDerived = true
	want := answers(t, s, all)
	s.ignoreDerived = false
	compareAnswers(t, "open hour built while writing", want, got)
}

// TestArchiveKeepsReadStructures archives a built hour, checks that the
// archive holds its read structures and answers through them as through
// scans, that the builder's writes do not stop the verified drop (they are
// not part of the fingerprint), and that the drop takes the hour's side
// tables and rows with it.
func TestArchiveKeepsReadStructures(t *testing.T) {
	ctx := context.Background()
	s, now, all := derivedFixture(t)
	now.Store(t0.Add(5 * time.Hour).UnixNano())
	if _, err := s.BuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	arch, fp := archiveHour(t, s, t0)
	// The builder runs again between the copy and the drop (nothing left
	// to build in the closed hour, but it must not matter either way).
	if _, err := s.BuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.DropHourIf(ctx, t0, arch, fp); err != nil {
		t.Fatalf("drop after the build: %v", err)
	}

	a, err := Open(arch, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var states []string
	rows, err := a.rdb.QueryContext(ctx, `SELECT name || '=' || state FROM derived ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v string
		rows.Scan(&v)
		states = append(states, v)
	}
	rows.Close()
	h := tableName(KindCalls, t0)
	// err and spans are kept by the writer from the hour's start ("live").
	wantStates := []string{h + "__err=live", h + "__func=done", h + "__parent=done", h + "__spans=live", tableName(KindStats, t0) + "__rollup=done", tableName(KindStats, t0) + "__rollup10=done"}
	if !slices.Equal(states, wantStates) {
		t.Errorf("archive derived rows %v, want %v", states, wantStates)
	}
	var inHour []record.Call
	for _, c := range all {
		if hourOf(c.Start).Equal(t0) {
			inHour = append(inHour, c)
		}
	}
	a.ignoreDerived = true
	want := answers(t, a, inHour)
	a.ignoreDerived = false
	got := answers(t, a, inHour)
	compareAnswers(t, "archive", want, got)
	if n := len(got["calls/all"].([]record.Call)); n != len(inHour) {
		t.Errorf("archive has %d calls, want %d", n, len(inHour))
	}

	// Nothing of the hour is left in the store once retention has
	// emptied the trash.
	if _, _, err := s.EmptyTrash(ctx); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := s.rdb.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM sqlite_master WHERE name LIKE ?)
		+ (SELECT count(*) FROM derived WHERE hour_ns = ?) + (SELECT count(*) FROM call_spans WHERE hour_ns = ?)
		+ (SELECT count(*) FROM call_ranges WHERE hour_ns = ?)`, "%"+t0.Format("2006010215")+"%", t0.UnixNano(), t0.UnixNano(), t0.UnixNano()).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d tables or rows of the dropped hour are left in the store", left)
	}
}
