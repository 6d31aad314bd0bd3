package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestCloseSessionOfDeadAgent: a session row left open is closed at the
// last time anything of it was stored (here a call's end, later than its
// aggregates and a later session's records on the same pid are not taken),
// with the given reason; a row that is already closed is left alone.
func TestCloseSessionOfDeadAgent(t *testing.T) {
	s, _ := openTest(t, fixedClock(t0.Add(30*time.Minute)))
	ctx := context.Background()
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	sid, err := s.BeginSession(record.Session{PID: 42, Start: at(0), AgentPID: 7, AgentStart: 99, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteCalls([]record.Call{
		{ID: sid<<40 | 1, PID: 42, Function: "main.f", Start: at(time.Minute), Duration: int64(90 * time.Second)},
		{ID: sid<<40 | 2, PID: 42, Function: "main.f", Start: at(2 * time.Minute), Duration: 10, Status: record.StatusError},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteStats([]record.FuncStats{{PID: 42, Function: "main.f", IntervalStart: at(0), IntervalEnd: at(time.Minute), Calls: 1}}); err != nil {
		t.Fatal(err)
	}
	// A later session on the same pid, whose records are not the first's.
	sid2, err := s.BeginSession(record.Session{PID: 42, Start: at(5 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSamples([]record.ResourceSample{{PID: 42, Time: at(10 * time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	open, err := s.OpenSessions(ctx)
	if err != nil || len(open) != 2 || open[0].AgentPID != 7 || open[0].AgentStart != 99 || open[0].BootID != "b" {
		t.Fatalf("OpenSessions = %+v, %v", open, err)
	}
	end, err := s.CloseSession(sid, "agent killed")
	if err != nil {
		t.Fatal(err)
	}
	if want := at(150 * time.Second); end != want {
		t.Errorf("end %v, want the last call's end %v", time.Unix(0, end).UTC(), time.Unix(0, want).UTC())
	}
	// The second session has only a sample.
	if end2, err := s.CloseSession(sid2, "agent killed"); err != nil || end2 != at(10*time.Minute) {
		t.Errorf("second session end %v, %v; want its sample's time", time.Unix(0, end2).UTC(), err)
	}
	if again, err := s.CloseSession(sid, "other"); err != nil || again != 0 {
		t.Errorf("closing a closed row = %d, %v; want 0, nil", again, err)
	}
	ss, err := s.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ss[0].End != end || ss[0].ExitReason != "agent killed" {
		t.Errorf("row %+v", ss[0])
	}
	if ok, err := s.ApplySessionEnd(record.Session{ID: sid, End: 1, ExitReason: "late"}); ok || err != nil {
		t.Errorf("ApplySessionEnd on a closed row = %v, %v", ok, err)
	}
}

// TestErrorsLostStored: the errors lost per function round-trip through
// EndSession and ApplySessionEnd.
func TestErrorsLostStored(t *testing.T) {
	s, _ := openTest(t, nil)
	ctx := context.Background()
	a, _ := s.BeginSession(record.Session{PID: 1, Start: 1})
	b, _ := s.BeginSession(record.Session{PID: 2, Start: 2})
	lost := map[string]uint64{"main.f": 3, "main.(*T).g": 1}
	if err := s.EndSession(record.Session{ID: a, End: 5, ExitReason: "x", CallsLost: 4, ErrorsLost: lost}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.ApplySessionEnd(record.Session{ID: b, End: 6, ExitReason: "y", ErrorsLost: map[string]uint64{"main.h": 2}}); !ok || err != nil {
		t.Fatalf("ApplySessionEnd = %v, %v", ok, err)
	}
	ss, err := s.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ss[0].ErrorsLost; len(got) != 2 || got["main.f"] != 3 || got["main.(*T).g"] != 1 {
		t.Errorf("session a errors lost %v", got)
	}
	if got := ss[1].ErrorsLost; got["main.h"] != 2 || ss[1].ExitReason != "y" || ss[1].End != 6 {
		t.Errorf("session b %+v", ss[1])
	}
	var total int64
	if err := s.rdb.QueryRow(`SELECT errors_lost FROM sessions WHERE id = ?`, int64(a)).Scan(&total); err != nil || total != 4 {
		t.Errorf("errors_lost column = %d, %v; want 4", total, err)
	}
}

// TestCacheBytes: CacheBytes sets each connection's page cache share and
// SQLite's soft heap limit.
func TestCacheBytes(t *testing.T) {
	s, err := Open(t.TempDir()+"/obs.db", Options{CacheBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var cache, mmap, soft int64
	if err := s.wc.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&cache); err != nil {
		t.Fatal(err)
	}
	if err := s.wc.QueryRowContext(ctx, "PRAGMA mmap_size").Scan(&mmap); err != nil {
		t.Fatal(err)
	}
	if err := s.wc.QueryRowContext(ctx, "PRAGMA soft_heap_limit").Scan(&soft); err != nil {
		t.Fatal(err)
	}
	if cache != -2048 || mmap != 0 || soft != 8<<20 {
		t.Errorf("writer: cache_size %d (want -2048 KiB), mmap_size %d (want 0), soft_heap_limit %d (want %d)", cache, mmap, soft, 8<<20)
	}
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&cache); err != nil || cache != -409 {
		t.Errorf("reader cache_size %d, %v; want -409 KiB", cache, err)
	}
}

// TestSessionRetention: a session keeps the retention window and archive
// directory its agent runs with. A store of schema 7 is migrated with its
// old rows reading 0 and "" (unknown), and a read-only open of the old
// store, which is not migrated, reads the same.
func TestSessionRetention(t *testing.T) {
	ctx := context.Background()
	path := oldSessionStore(t, 7)
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ss, err := ro.Sessions(ctx)
	ro.Close()
	if err != nil || len(ss) != 1 || ss[0].Retention != 0 || ss[0].ArchiveDir != "" {
		t.Fatalf("read-only sessions of a v7 store: %+v, %v", ss, err)
	}

	s, err := Open(path, Options{Clock: fixedClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.BeginSession(record.Session{PID: 7, Start: 2, Retention: 36 * time.Hour, ArchiveDir: "/srv/archive"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginSession(record.Session{PID: 8, Start: 3, Retention: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	ss, err = s.Sessions(ctx)
	if err != nil || len(ss) != 3 {
		t.Fatalf("sessions after migrate: %+v, %v", ss, err)
	}
	type kept struct {
		d   time.Duration
		dir string
	}
	got := []kept{{ss[0].Retention, ss[0].ArchiveDir}, {ss[1].Retention, ss[1].ArchiveDir}, {ss[2].Retention, ss[2].ArchiveDir}}
	want := []kept{{0, ""}, {36 * time.Hour, "/srv/archive"}, {2 * time.Hour, ""}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("retention of the sessions: %v, want %v", got, want)
	}
}

// oldSessionStore makes a store of schema version (as the code of that
// version made it) holding one session row, pid 42, and returns its path.
func oldSessionStore(t *testing.T, version int) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := migrate(ctx, conn, path, version); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO sessions (pid, binary, start_ns) VALUES (42, '/bin/old', 1)`); err != nil {
		t.Fatal(err)
	}
	return path
}
