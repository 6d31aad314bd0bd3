package store

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// dumpTable returns every row of table, in key order, as text.
func dumpTable(t *testing.T, s *Store, table, order string) []string {
	t.Helper()
	rows, err := s.rdb.Query(`SELECT * FROM ` + table + ` ORDER BY ` + order)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%#v", vals))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRawWriterActive: the writer binds on SQLite's handle (rawwrite.go),
// and stores exactly the rows, and error lane rows, that the driver path
// does, for every kind of row: ok with and without a parent, errors with
// and without a type, truncated texts, panics, unfinished calls, in
// batches that take both statement shapes. A failure on the raw path is
// classified like the driver's: a duplicate id is refused.
func TestRawWriterActive(t *testing.T) {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(3, 4))
	pool := genCalls(rng, 1, base, 12_000)
	for i := range pool {
		switch c := &pool[i]; {
		case i%997 == 0:
			c.Status, c.Error, c.ErrorType = record.StatusPanic, "runtime error: index out of range [3] with length 3", "runtime.boundsError"
		case i%991 == 0:
			c.Status, c.Error, c.ErrorType = record.StatusUnfinished, "", ""
		case i%983 == 0:
			c.ErrorType, c.ErrorTruncated = "", true
			c.Status, c.Error = record.StatusError, strings.Repeat("é", 300)
		}
	}
	// The first 6,000 at 20% errors (all rows in the full shape), the
	// rest at about 0.3% (ok rows in their own statements).
	for i := 6000; i < len(pool); i++ {
		if pool[i].Status == record.StatusError && i%50 != 0 {
			pool[i].Status, pool[i].Error, pool[i].ErrorType = record.StatusOK, "", ""
		}
	}
	var batches [][]record.Call
	for off := 0; off < len(pool); off += 3000 {
		batch := append([]record.Call(nil), pool[off:off+3000]...)
		agentOrder(batch)
		batches = append(batches, batch)
	}
	raw, drv := writeBothWays(t, base, batches)
	sameRows(t, raw, drv, base)

	// A batch holding an id already stored fails whole, refused.
	dup := []record.Call{{ID: uint64(len(pool)) + 1, PID: 1, GoID: 1, Function: "main.f", Start: base.UnixNano(), Duration: 1}, pool[5]}
	err := raw.WriteCalls(dup)
	if err == nil || !Refused(err) || !strings.Contains(err.Error(), "UNIQUE constraint failed") {
		t.Fatalf("duplicate id: %v (refused %v)", err, Refused(err))
	}
	if _, err := raw.Call(t.Context(), uint64(len(pool))+1); err == nil {
		t.Fatal("the failed batch's new call was stored")
	}
}

// TestRawWriterAppends: rows whose id is one more than the largest rowid
// of the table are bound a NULL rowid (rowidTail) and still come out with
// exactly their ids, next to rows that are not: late rows behind the
// right edge, ids after a gap, a second session's lower ids written after
// the first's, a batch across two hours, errors among ok rows (both
// statement shapes). Every row, and the read structures, equal the
// driver path's (which binds every id); most rows of the batches took the
// NULL rowid; a duplicate id is still refused.
func TestRawWriterAppends(t *testing.T) {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(5, 6))
	const sessA, sessB = uint64(7) << 40, uint64(3) << 40
	var batches [][]record.Call
	// Session A: 4 batches of 2,000 contiguous ids at 1% errors (the ok
	// rows in their own statements); the calls still running when each
	// batch was cut (every 97th id of its last 300) come in the next.
	a := genCalls(rng, sessA+1, base, 8000)
	var late []record.Call
	for off := 0; off < len(a); off += 2000 {
		var b []record.Call
		b = append(b, late...)
		late = late[:0]
		for i, c := range a[off : off+2000] {
			if c.Status == record.StatusError && i%100 != 0 {
				c.Status, c.Error, c.ErrorType = record.StatusOK, "", ""
			}
			if i >= 1700 && i%97 == 0 && off+2000 < len(a) {
				late = append(late, c)
				continue
			}
			b = append(b, c)
		}
		agentOrder(b)
		batches = append(batches, b)
	}
	// Session A again after a gap of ids, at 20% errors (all rows in
	// the full shape), the last 500 in the next hour.
	g := genCalls(rng, sessA+9000, base.Add(20*time.Minute), 2000)
	for i := 1500; i < len(g); i++ {
		g[i].Start += int64(time.Hour)
	}
	batches = append(batches, g)
	// Session B, ids below all of A's, then B and A in one batch.
	batches = append(batches, genCalls(rng, sessB+1, base.Add(30*time.Minute), 1000))
	mixed := append(genCalls(rng, sessB+1001, base.Add(31*time.Minute), 500), genCalls(rng, sessA+11000, base.Add(31*time.Minute), 500)...)
	for i := range mixed {
		mixed[i].ParentID = 0
	}
	batches = append(batches, mixed)
	var total int
	for _, b := range batches {
		total += len(b)
	}

	raw, drv := writeBothWays(t, base, batches)
	if raw.raw.noAppend {
		t.Fatal("appending turned off")
	}
	// Bound their ids: the late calls, the error rows of the 1% batches
	// and the ok rows after them, the first row after a gap, and session
	// B's rows (below A's ids): about an eighth here.
	t.Logf("%d of %d rows bound a NULL rowid", raw.raw.appended, total)
	if n := raw.raw.appended; n < uint64(total)*8/10 {
		t.Errorf("%d of %d rows bound a NULL rowid, want most", n, total)
	}
	sameRows(t, raw, drv, base, base.Add(time.Hour))
	var n int
	if err := raw.rdb.QueryRow(`SELECT (SELECT count(*) FROM ` + tableName(KindCalls, base) + `) + (SELECT count(*) FROM ` + tableName(KindCalls, base.Add(time.Hour)) + `)`).Scan(&n); err != nil || n != total {
		t.Fatalf("%d rows stored (%v), want %d", n, err, total)
	}

	// The largest id plus one, twice in a batch: the first appends, the
	// second is refused, and the batch fails whole.
	next := sessA + 11501
	dup := []record.Call{{ID: next, PID: 1, GoID: 1, Function: "main.f", Start: base.UnixNano(), Duration: 1}}
	dup = append(dup, dup[0])
	if err := raw.WriteCalls(dup); err == nil || !Refused(err) {
		t.Fatalf("duplicate id: %v (refused %v)", err, Refused(err))
	}
	if _, err := raw.Call(t.Context(), next); err == nil {
		t.Fatal("the failed batch's call was stored")
	}
}

// TestRawWriterRowidGuard: when the writer misjudges the largest rowid
// (rowidSkew stands in for a bug), the rows bound NULL would get rowids
// other than their ids; the guard sees it, the batch is written again with
// every id bound, and the writer binds every id from then on.
func TestRawWriterRowidGuard(t *testing.T) {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	s, err := Open(filepath.Join(t.TempDir(), "obs.db"), Options{Clock: func() time.Time { return base }, NoBackgroundBuild: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pool := genCalls(rand.New(rand.NewPCG(7, 8)), 1, base, 3000)
	if err := s.WriteCalls(pool[:1000]); err != nil {
		t.Fatal(err)
	}
	if s.raw == nil || s.raw.appended == 0 {
		t.Fatal("the first batch bound no NULL rowid")
	}
	// Five ids of the next batch come late: a writer that takes the
	// largest rowid for 5 more than it is binds the batch's first id
	// NULL, which gets the rowid 5 below it, and so on.
	rowidSkew = 5
	defer func() { rowidSkew = 0 }()
	if err := s.WriteCalls(pool[1005:2000]); err != nil {
		t.Fatal(err)
	}
	if !s.raw.noAppend {
		t.Fatal("the guard did not turn NULL rowids off")
	}
	rowidSkew = 0
	appended := s.raw.appended
	if err := s.WriteCalls(pool[1000:1005]); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteCalls(pool[2000:]); err != nil {
		t.Fatal(err)
	}
	if s.raw.appended != appended {
		t.Fatalf("%d more NULL rowids after the guard fired", s.raw.appended-appended)
	}
	rows, err := s.rdb.Query(`SELECT id FROM ` + tableName(KindCalls, base) + ` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var i int
	for ; rows.Next(); i++ {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		if i >= len(pool) || id != pool[i].ID {
			t.Fatalf("row %d has id %d, want %d", i, id, pool[min(i, len(pool)-1)].ID)
		}
	}
	if i != len(pool) {
		t.Fatalf("%d rows, want %d", i, len(pool))
	}
}

// writeBothWays writes batches (copies of them) into two new stores, on
// the raw path and through the driver (benchBefore), and checks that each
// store used the path it was meant to.
func writeBothWays(t *testing.T, base time.Time, batches [][]record.Call) (raw, drv *Store) {
	t.Helper()
	write := func(before bool) *Store {
		benchBefore = before
		defer func() { benchBefore = false }()
		s, err := Open(filepath.Join(t.TempDir(), "obs.db"), Options{Clock: func() time.Time { return base }, NoBackgroundBuild: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		for _, b := range batches {
			if err := s.WriteCalls(append([]record.Call(nil), b...)); err != nil {
				t.Fatal(err)
			}
		}
		if (s.raw != nil) == before {
			t.Fatalf("before=%v: raw writer in use: %v", before, s.raw != nil)
		}
		return s
	}
	return write(false), write(true)
}

// sameRows fails unless raw and drv hold the same calls rows and error
// lane rows in the hours given, and the same read structures.
func sameRows(t *testing.T, raw, drv *Store, hours ...time.Time) {
	t.Helper()
	type tab struct{ table, order string }
	tabs := []tab{{"call_spans", "hour_ns, bucket_ns, session"}, {"call_ranges", "hour_ns, session"}}
	for _, h := range hours {
		table := tableName(KindCalls, h)
		tabs = append(tabs, tab{table, "id"}, tab{sideName(table, sideErr), "start_ns, id"})
	}
	for _, tc := range tabs {
		a, b := dumpTable(t, raw, tc.table, tc.order), dumpTable(t, drv, tc.table, tc.order)
		if len(a) == 0 || len(a) != len(b) {
			t.Fatalf("%s: %d rows raw, %d through the driver", tc.table, len(a), len(b))
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%s row %d:\nraw    %s\ndriver %s", tc.table, i, a[i], b[i])
			}
		}
	}
}
