package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// dbstatBytes sizes each partition with SQLite's dbstat, which reads every
// page: the slow, obviously right answer partitionBytes must equal.
func dbstatBytes(t *testing.T, s *Store) map[string]int64 {
	t.Helper()
	rows, err := s.rdb.Query(`SELECT m.tbl_name, sum(d.pgsize) FROM dbstat AS d JOIN sqlite_master AS m ON m.name = d.name
		WHERE d.aggregate = TRUE GROUP BY m.tbl_name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var n string
		var b int64
		if err := rows.Scan(&n, &b); err != nil {
			t.Fatal(err)
		}
		if i := strings.Index(n, "__"); i > 0 {
			n = n[:i]
		}
		out[n] += b
	}
	return out
}

// checkPartitions compares Partitions with count(*) and dbstat.
func checkPartitions(t *testing.T, s *Store) []Partition {
	t.Helper()
	ps, err := s.Partitions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := dbstatBytes(t, s)
	for _, p := range ps {
		var n int64
		if err := s.rdb.QueryRow(`SELECT count(*) FROM ` + p.Name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if p.Rows != n {
			t.Errorf("%s: Partitions says %d rows, count(*) %d", p.Name, p.Rows, n)
		}
		if p.Bytes != want[p.Name] || p.Bytes <= 0 {
			t.Errorf("%s: Partitions says %d bytes, dbstat %d", p.Name, p.Bytes, want[p.Name])
		}
	}
	return ps
}

// TestPartitionCounts: the writer's row counts and the page-walk sizes
// equal count(*) and dbstat after calls (with 1 KiB error texts), stats,
// samples and gaps over three hours, a failed batch, a gap written twice,
// the background build of the side tables, and for a partition from before
// the counts (NULL, counted by the reader).
func TestPartitionCounts(t *testing.T) {
	s, now, all := derivedFixture(t)
	ctx := context.Background()
	long := strings.Repeat("x", 1024)
	var errs []record.Call
	for i := range 300 {
		errs = append(errs, record.Call{ID: 3<<40 | uint64(i+1), PID: 9, GoID: 1, Function: "main.fail", Start: t0.Add(time.Duration(i) * time.Second).UnixNano(),
			Status: record.StatusError, ErrorType: "*errors.errorString", Error: long})
	}
	if err := s.WriteCalls(errs); err != nil {
		t.Fatal(err)
	}
	// A batch with a duplicate id fails as a whole: no count moves.
	if err := s.WriteCalls([]record.Call{{ID: 3<<40 | 9999, Function: "main.f", Start: t0.UnixNano()}, all[0]}); err == nil {
		t.Fatal("a batch with a duplicate id was written")
	}
	var samples []record.ResourceSample
	for i := range 100 {
		samples = append(samples, record.ResourceSample{PID: 9, Time: t0.Add(time.Duration(i) * time.Minute).UnixNano(), RSSBytes: ptr(uint64(i))})
	}
	if err := s.WriteSamples(samples); err != nil {
		t.Fatal(err)
	}
	gap := record.Gap{PID: 9, Function: "main.fail", Start: t0.Add(time.Minute).UnixNano(), Reason: "breaker"}
	if err := s.WriteGaps([]record.Gap{gap}); err != nil {
		t.Fatal(err)
	}
	gap.End = t0.Add(2 * time.Minute).UnixNano()
	if err := s.WriteGaps([]record.Gap{gap}); err != nil { // an update, not a row
		t.Fatal(err)
	}
	checkPartitions(t, s)

	now.Store(t0.Add(4 * time.Hour).UnixNano())
	if _, err := s.BuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	ps := checkPartitions(t, s)
	var calls int64
	for _, p := range ps {
		if p.Kind == KindCalls {
			calls += p.Rows
		}
	}
	if calls != int64(len(all)+len(errs)) {
		t.Errorf("calls partitions hold %d rows, %d were written", calls, len(all)+len(errs))
	}

	// A partition from a store before schema 5 has no count.
	if _, err := s.wc.ExecContext(ctx, `UPDATE partitions SET rows = NULL WHERE name = ?`, tableName(KindCalls, t0)); err != nil {
		t.Fatal(err)
	}
	checkPartitions(t, s)
}
