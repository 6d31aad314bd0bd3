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
	write := func(before bool) *Store {
		benchBefore = before
		defer func() { benchBefore = false }()
		s, err := Open(filepath.Join(t.TempDir(), "obs.db"), Options{Clock: func() time.Time { return base }, NoBackgroundBuild: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		for off := 0; off < len(pool); off += 3000 {
			batch := append([]record.Call(nil), pool[off:off+3000]...)
			agentOrder(batch)
			if err := s.WriteCalls(batch); err != nil {
				t.Fatal(err)
			}
		}
		if (s.raw != nil) == before {
			t.Fatalf("before=%v: raw writer in use: %v", before, s.raw != nil)
		}
		return s
	}
	raw, drv := write(false), write(true)
	table := tableName(KindCalls, base)
	for _, tc := range []struct{ table, order string }{
		{table, "id"},
		{sideName(table, sideErr), "start_ns, id"},
		{"call_spans", "hour_ns, bucket_ns, session"},
		{"call_ranges", "hour_ns, session"},
	} {
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
