package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// trashTables lists the tables a drop renamed and EmptyTrash has not
// dropped yet.
func trashTables(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.rdb.Query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'trash\_%' ESCAPE '\'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// TestDropLeavesTrashEmptiedInSteps: the drop's transaction renames the
// hour's calls partition and its side tables out of the way; their pages
// are freed afterwards by EmptyTrash, one table dropped per transaction.
// An emptying that is interrupted is finished by the next EmptyTrash, and
// a late row of the dropped hour starts a fresh partition: none of the
// dropped rows come back with it.
func TestDropLeavesTrashEmptiedInSteps(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(5 * time.Hour)
	s, _ := openTest(t, fixedClock(now))
	var calls []record.Call
	for i := range 1000 {
		c := record.Call{ID: uint64(i + 1), ParentID: uint64(i), Function: "main.f", Start: t0.UnixNano() + int64(i)*1000, Duration: 5}
		if i%10 == 0 {
			c.Status, c.Error = record.StatusError, "boom"
		}
		calls = append(calls, c)
	}
	if err := s.WriteCalls(calls); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { trashStepHook = nil }()
	if err := s.DropHour(ctx, t0, ""); err != nil {
		t.Fatal(err)
	}
	if hours, _ := s.Hours(ctx); len(hours) > 0 && hours[0].Equal(t0) {
		t.Fatalf("hour %v still listed after the drop: %v", t0, hours)
	}
	// calls, __err, __parent, __func, and the stats rollup (built for
	// the closed hour) are renamed; the small partitions with named
	// indexes are dropped in place.
	trash := trashTables(t, s)
	if len(trash) < 4 {
		t.Fatalf("trash after the drop: %v; want the calls partition and its side tables", trash)
	}
	var steps []time.Duration
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	trashStepHook = func(d time.Duration) {
		if steps = append(steps, d); len(steps) == 1 {
			cancel()
		}
	}
	if n, _, err := s.EmptyTrash(cctx); !errors.Is(err, context.Canceled) || n != 1 {
		t.Fatalf("interrupted EmptyTrash: %d tables dropped, %v; want 1, context.Canceled", n, err)
	}
	if left := trashTables(t, s); len(left) != len(trash)-1 {
		t.Fatalf("trash after an interrupted emptying: %v; want all but one of %v", left, trash)
	}
	late := record.Call{ID: 5000, Function: "main.f", Start: t0.UnixNano() + 7, Duration: 1}
	if err := s.WriteCalls([]record.Call{late}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Calls(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != late.ID {
		t.Fatalf("calls after a late row of the dropped hour: %d rows (first %+v); want only the late one", len(got), got)
	}
	trashStepHook = func(d time.Duration) { steps = append(steps, d) }
	n, longest, err := s.EmptyTrash(ctx)
	if err != nil || longest <= 0 {
		t.Fatal(err)
	}
	// The rest, one table per transaction.
	if n != len(trash)-1 {
		t.Errorf("EmptyTrash dropped %d tables; want the %d left", n, len(trash)-1)
	}
	if left := trashTables(t, s); len(left) != 0 {
		t.Fatalf("trash left after EmptyTrash: %v", left)
	}
	if got, err := s.Calls(ctx, Filter{}); err != nil || len(got) != 1 {
		t.Fatalf("calls after emptying the trash: %d, %v", len(got), err)
	}
	if err := s.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDropHourIfChecksGenerations: the dropping transaction trusts the
// snapshot's sums only while the hour's write generations are unchanged;
// a row written by another Store on the same file after the snapshot
// raises them and stops the drop, and the generations a write raises are
// those of the hour written.
func TestDropHourIfChecksGenerations(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(5 * time.Hour)
	s, _ := openTest(t, fixedClock(now))
	if err := s.WriteCalls([]record.Call{{ID: 1, Function: "main.f", Start: t0.UnixNano()}}); err != nil {
		t.Fatal(err)
	}
	g0, err := hourGens(ctx, s.rdb, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteCalls([]record.Call{{ID: 2, Function: "main.f", Start: now.UnixNano()}}); err != nil {
		t.Fatal(err)
	}
	g1, _ := hourGens(ctx, s.rdb, t0)
	if g0[tableName(KindCalls, t0)] != 1 || g1[tableName(KindCalls, t0)] != 1 {
		t.Fatalf("generations of %v: %v, then %v after a write to another hour; want 1 and 1", t0, g0, g1)
	}
	if err := s.WriteCalls([]record.Call{{ID: 3, Function: "main.f", Start: t0.UnixNano() + 1}}); err != nil {
		t.Fatal(err)
	}
	g2, _ := hourGens(ctx, s.rdb, t0)
	if g2[tableName(KindCalls, t0)] != 2 {
		t.Fatalf("generation after a second write to the hour: %v; want 2", g2)
	}
	arch, fp := archiveHour(t, s, t0)
	if err := s.DropHourIf(ctx, t0, arch, fp); err != nil {
		t.Fatalf("DropHourIf of an unchanged hour: %v", err)
	}
	var n int
	if err := s.rdb.QueryRow(`SELECT count(*) FROM partition_writes WHERE name LIKE '%_2026112710'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("partition_writes rows of the dropped hour: %d, %v", n, err)
	}
	if err := s.DropHourIf(ctx, t0, arch, fp); !errors.Is(err, ErrArchiveMismatch) {
		t.Fatalf("DropHourIf of a dropped hour: %v; want ErrArchiveMismatch", err)
	}
}
