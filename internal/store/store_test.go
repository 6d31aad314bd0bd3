package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func openTest(t *testing.T, clock func() time.Time) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "obs.db")
	s, err := Open(path, Options{Clock: clock, BusyTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func ptr[T any](v T) *T { return &v }

func TestRoundTrip(t *testing.T) {
	s, _ := openTest(t, fixedClock(t0.Add(30*time.Minute)))
	ctx := context.Background()
	sid, err := s.BeginSession(record.Session{PID: 42, Binary: "/bin/app", GoVersion: "go1.26.0", Patterns: "main.*", Start: t0.UnixNano()})
	if err != nil || sid != 1 {
		t.Fatalf("BeginSession = %d, %v", sid, err)
	}
	if err := s.RegisterFunctions([]record.Function{
		{Name: "main.main", Package: "main", Module: "example.com/app"},
		{Name: "main.(*T).Get", Package: "main", Module: "example.com/app"},
		{Name: "main.Map[go.shape.int]", Package: "main", Module: "example.com/app"},
	}); err != nil {
		t.Fatal(err)
	}
	base := sid << 40
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	calls := []record.Call{
		{ID: base + 1, PID: 42, GoID: 1, Function: "main.main", Start: at(time.Minute), Duration: 5e9, Status: record.StatusOK},
		{ID: base + 2, ParentID: base + 1, PID: 42, GoID: 1, Function: "main.(*T).Get", Start: at(time.Minute + time.Second), Duration: 1000, Status: record.StatusError, ErrorType: "*errors.errorString", Error: "not found"},
		{ID: base + 3, ParentID: base + 2, PID: 42, GoID: 7, Function: "main.Map[go.shape.int]", Start: at(time.Minute + 2*time.Second), Duration: 10, Status: record.StatusPanic, Error: "index out of range", ErrorTruncated: true},
		{ID: base + 4, ParentID: base + 1, PID: 42, GoID: 1, Function: "main.(*T).Get", Start: at(2 * time.Minute), Duration: 2000},
		{ID: base + 5, PID: 43, GoID: 1, Function: "other.Unregistered", Start: at(3 * time.Minute), Duration: 1, Status: record.StatusUnfinished},
	}
	if err := s.WriteCalls(calls); err != nil {
		t.Fatal(err)
	}
	got, err := s.Calls(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(calls) {
		t.Fatalf("Calls = %d rows, want %d", len(got), len(calls))
	}
	for i := range calls {
		if got[i] != calls[i] {
			t.Errorf("call %d:\n got %+v\nwant %+v", i, got[i], calls[i])
		}
	}
	check := func(name string, f Filter, want ...uint64) {
		t.Helper()
		got, err := s.Calls(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []uint64
		for _, c := range got {
			ids = append(ids, c.ID-base)
		}
		if len(ids) != len(want) || (len(want) > 0 && !equal(ids, want)) {
			t.Errorf("%s: ids %v, want %v", name, ids, want)
		}
	}
	check("pid", Filter{PID: 43}, 5)
	check("glob", Filter{Func: "main.(*T).*"}, 2, 4)
	check("generic literal bracket", Filter{Func: "main.Map[go.shape.*]"}, 3)
	check("question mark", Filter{Func: "main.ma?n"}, 1)
	check("no match", Filter{Func: "nothing.*"})
	check("status", Filter{Status: []record.Status{record.StatusError, record.StatusPanic}}, 2, 3)
	check("min duration", Filter{MinDuration: time.Microsecond}, 1, 2, 4)
	check("since/until", Filter{Since: t0.Add(time.Minute + time.Second), Until: t0.Add(2 * time.Minute)}, 2, 3)
	check("limit", Filter{Limit: 2}, 1, 2)

	errs, err := s.Errors(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 3 || errs[0].ID != base+5 || errs[2].ID != base+2 {
		t.Errorf("Errors not newest first: %+v", errs)
	}
	c, err := s.Call(ctx, base+3)
	if err != nil || c != calls[2] {
		t.Errorf("Call = %+v, %v", c, err)
	}
	if _, err := s.Call(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("Call(missing) err = %v, want ErrNotFound", err)
	}
	kids, err := s.Children(ctx, base+1)
	if err != nil || len(kids) != 2 || kids[0].ID != base+2 || kids[1].ID != base+4 {
		t.Errorf("Children = %+v, %v", kids, err)
	}
	ids, trunc, err := s.Descendants(ctx, c0(t, s, base+1), 0)
	if err != nil || trunc || !equal(ids, []uint64{base + 1, base + 2, base + 4, base + 3}) {
		t.Errorf("Descendants = %v, %v, %v; want breadth first 1 2 4 3", ids, trunc, err)
	}
	if ids, trunc, _ := s.Descendants(ctx, c0(t, s, base+1), 2); !trunc || len(ids) != 2 {
		t.Errorf("Descendants limit 2 = %v, truncated %v", ids, trunc)
	}

	// Samples with missing metrics.
	samples := []record.ResourceSample{
		{PID: 42, Time: at(time.Minute), CPUPercent: ptr(12.5), RSSBytes: ptr(uint64(1 << 30)), Threads: ptr(int64(9)), Goroutines: ptr(int64(100))},
		{PID: 42, Time: at(2 * time.Minute)},
	}
	if err := s.WriteSamples(samples); err != nil {
		t.Fatal(err)
	}
	gs, err := s.Samples(ctx, Filter{PID: 42})
	if err != nil || len(gs) != 2 {
		t.Fatalf("Samples = %v, %v", gs, err)
	}
	if *gs[0].CPUPercent != 12.5 || *gs[0].RSSBytes != 1<<30 || gs[0].VMSBytes != nil || *gs[0].Goroutines != 100 || gs[1].CPUPercent != nil {
		t.Errorf("Samples = %+v", gs)
	}

	// Gaps, updated when closed.
	if err := s.WriteGaps([]record.Gap{{PID: 42, Function: "main.(*T).Get", Start: at(4 * time.Minute), Reason: "ring full"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteGaps([]record.Gap{{PID: 42, Function: "main.(*T).Get", Start: at(4 * time.Minute), End: at(5 * time.Minute), Reason: "ring full"}}); err != nil {
		t.Fatal(err)
	}
	gaps, err := s.Gaps(ctx, Filter{})
	if err != nil || len(gaps) != 1 || gaps[0].End != at(5*time.Minute) || gaps[0].Function != "main.(*T).Get" {
		t.Errorf("Gaps = %+v, %v", gaps, err)
	}

	// Stats.
	var h [record.HistBuckets]uint64
	h[10] = 90 // 512..1023
	h[20] = 10 // 524288..1048575
	if err := s.WriteStats([]record.FuncStats{
		{PID: 42, Function: "main.(*T).Get", IntervalStart: at(time.Minute), IntervalEnd: at(2 * time.Minute), Calls: 60, Errors: 3, Recorded: 50, Sampled: 5, Dropped: 5, TotalNs: 6000, MaxNs: 900000, Hist: h},
		{PID: 42, Function: "main.(*T).Get", IntervalStart: at(2 * time.Minute), IntervalEnd: at(3 * time.Minute), Calls: 40, Panics: 1, Recorded: 40, TotalNs: 4000, MaxNs: 1000},
		{PID: 42, Function: "main.main", IntervalStart: at(time.Minute), IntervalEnd: at(2 * time.Minute), Calls: 1, Recorded: 1, TotalNs: 5e9, MaxNs: 5e9},
	}); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Stats(ctx, Filter{})
	if err != nil || len(rows) != 2 {
		t.Fatalf("Stats = %+v, %v", rows, err)
	}
	r := rows[0] // sorted by name
	if r.Function != (record.Function{Name: "main.(*T).Get", Package: "main", Module: "example.com/app"}) || r.Calls != 100 || r.Errors != 3 ||
		r.Panics != 1 || r.Lost() != 10 || r.TotalNs != 10000 || r.MaxNs != 900000 || r.Hist[10] != 90 || r.Hist[20] != 10 ||
		r.IntervalStart != at(time.Minute) || r.IntervalEnd != at(3*time.Minute) {
		t.Errorf("Stats row = %+v", r)
	}

	// Sessions.
	if err := s.EndSession(record.Session{ID: sid, End: at(time.Hour), CallsRecorded: 5, CallsLost: 1, ExitReason: "exited 0"}); err != nil {
		t.Fatal(err)
	}
	ss, err := s.Sessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].ExitReason != "exited 0" || ss[0].CallsLost != 1 || ss[0].Binary != "/bin/app" {
		t.Errorf("Sessions = %+v, %v", ss, err)
	}
	if err := s.EndSession(record.Session{ID: 77}); !errors.Is(err, ErrNotFound) {
		t.Errorf("EndSession(unknown) = %v", err)
	}
}

// c0 loads one call.
func c0(t *testing.T, s *Store, id uint64) record.Call {
	t.Helper()
	c, err := s.Call(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPartitionRouting(t *testing.T) {
	now := t0.Add(59*time.Minute + 59*time.Second)
	clock := func() time.Time { return now }
	s, _ := openTest(t, clock)
	ctx := context.Background()
	before := t0.Add(time.Hour - time.Millisecond).UnixNano()
	after := t0.Add(time.Hour + time.Millisecond).UnixNano()
	late := t0.Add(-3 * time.Hour).UnixNano() // a late record: hour not pre-created
	if err := s.WriteCalls([]record.Call{
		{ID: 1, Function: "main.a", Start: before},
		{ID: 2, Function: "main.b", Start: after},
		{ID: 3, Function: "main.c", Start: late},
	}); err != nil {
		t.Fatal(err)
	}
	parts, err := s.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int64{}
	for _, p := range parts {
		rows[p.Name] = p.Rows
		if p.End.Sub(p.Start) != time.Hour {
			t.Errorf("%s spans %v", p.Name, p.End.Sub(p.Start))
		}
		if p.Bytes <= 0 {
			t.Errorf("%s: bytes = %d", p.Name, p.Bytes)
		}
	}
	for name, want := range map[string]int64{"calls_2026112710": 1, "calls_2026112711": 1, "calls_2026112707": 1, "stats_2026112711": 0, "gaps_2026112707": 0} {
		if got, ok := rows[name]; !ok || got != want {
			t.Errorf("partition %s rows = %d (present %v), want %d", name, got, ok, want)
		}
	}
	// The clock moves on: the writer creates the current and the next hour.
	now = t0.Add(5 * time.Hour)
	if err := s.WriteCalls([]record.Call{{ID: 4, Function: "main.a", Start: now.UnixNano()}}); err != nil {
		t.Fatal(err)
	}
	hours, _ := s.Hours(ctx)
	if last := hours[len(hours)-1]; !last.Equal(t0.Add(6 * time.Hour)) {
		t.Errorf("last hour = %v, want the next hour %v", last, t0.Add(6*time.Hour))
	}
	// Queries span partitions transparently, in start order.
	got, err := s.Calls(ctx, Filter{})
	if err != nil || len(got) != 4 || got[0].ID != 3 || got[1].ID != 1 || got[2].ID != 2 || got[3].ID != 4 {
		t.Errorf("Calls across hours = %+v, %v", got, err)
	}
	got, _ = s.Calls(ctx, Filter{Since: t0.Add(59 * time.Minute), Until: t0.Add(61 * time.Minute)})
	if len(got) != 2 {
		t.Errorf("boundary range = %d calls, want 2", len(got))
	}
	// A reopened store knows its partitions and functions.
	s.Close()
	s2, err := Open(s.Path(), Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.WriteCalls([]record.Call{{ID: 5, Function: "main.a", Start: before + 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s2.DropPartition(ctx, "calls_2026112707"); err != nil {
		t.Fatal(err)
	}
	if err := s2.DropPartition(ctx, "sessions"); err == nil {
		t.Error("DropPartition(sessions) succeeded")
	}
	got, _ = s2.Calls(ctx, Filter{})
	if len(got) != 4 || got[0].ID != 1 {
		t.Errorf("after drop: %+v", got)
	}
}

func TestFailedBatchLeavesNothing(t *testing.T) {
	s, _ := openTest(t, fixedClock(t0))
	ctx := context.Background()
	if err := s.WriteCalls([]record.Call{{ID: 1, Function: "main.a", Start: t0.UnixNano()}}); err != nil {
		t.Fatal(err)
	}
	batch := []record.Call{
		{ID: 2, Function: "main.new", Start: t0.Add(2 * time.Hour).UnixNano()},
		{ID: 1, Function: "main.a", Start: t0.UnixNano()}, // duplicate id
	}
	if err := s.WriteCalls(batch); err == nil {
		t.Fatal("duplicate id: no error")
	}
	got, _ := s.Calls(ctx, Filter{})
	if len(got) != 1 {
		t.Fatalf("after failed batch: %d calls, want 1", len(got))
	}
	hours, _ := s.Hours(ctx)
	for _, h := range hours {
		if h.Equal(t0.Add(2 * time.Hour)) {
			t.Error("failed batch left its partition behind")
		}
	}
	// The caches were rolled back too: the same new function and hour work.
	batch[1].ID = 3
	if err := s.WriteCalls(batch); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Calls(ctx, Filter{Func: "main.new"})
	if len(got) != 1 {
		t.Errorf("retry: %d calls of main.new", len(got))
	}
}

func TestMigrateFromV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := db.Conn(context.Background())
	if err := migrate(context.Background(), conn, path, 1); err != nil {
		t.Fatal(err)
	}
	conn.ExecContext(context.Background(), `INSERT INTO functions (name, package) VALUES ('main.old', 'main')`)
	conn.Close()
	db.Close()

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v int
	s.rdb.QueryRow(`SELECT version FROM schema_version`).Scan(&v)
	if v != SchemaVersion {
		t.Errorf("version after migrate = %d, want %d", v, SchemaVersion)
	}
	if _, err := s.RetentionLog(context.Background()); err != nil {
		t.Errorf("retention_log after migrate: %v", err)
	}
	if err := s.WriteCalls([]record.Call{{ID: 1, Function: "main.old", Start: t0.UnixNano()}}); err != nil {
		t.Fatal(err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	s, path := openTest(t, nil)
	s.wc.ExecContext(context.Background(), `UPDATE schema_version SET version = 99`)
	s.Close()
	for _, ro := range []bool{false, true} {
		_, err := Open(path, Options{ReadOnly: ro})
		if !errors.Is(err, ErrNewerSchema) {
			t.Fatalf("ReadOnly=%v: err = %v, want ErrNewerSchema", ro, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "99") || !strings.Contains(msg, "upgrade obs-agent") {
			t.Errorf("message %q doesn't name the version and the fix", msg)
		}
	}
}

func TestCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.db")
	os.WriteFile(path, []byte(strings.Repeat("this is not a database ", 400)), 0o600)
	for _, ro := range []bool{false, true} {
		_, err := Open(path, Options{ReadOnly: ro})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadOnly=%v: err = %v, want ErrCorrupt", ro, err)
		}
		if !strings.Contains(err.Error(), "move it aside") {
			t.Errorf("message %q says nothing actionable", err)
		}
	}
}

func TestMissingStoreReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none", "obs.db")
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrNoStore) {
		t.Fatalf("err = %v, want ErrNoStore", err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Error("read-only Open created the directory")
	}
}

func TestReadOnlyFile(t *testing.T) {
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		// Root ignores file modes: make the file system read-only instead.
		requireRoot(t)
		mount(t, dir, "size=4m")
	}
	path := filepath.Join(dir, "obs.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteCalls([]record.Call{{ID: 1, Function: "main.a", Start: t0.UnixNano()}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if os.Geteuid() == 0 {
		if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
			t.Skipf("remount read-only: %v: %s", err, out)
		}
	} else {
		os.Chmod(path, 0o444)
		os.Chmod(dir, 0o555)
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	}
	s, err = Open(path, Options{})
	if err == nil {
		err = s.WriteCalls([]record.Call{{ID: 2, Function: "main.a", Start: t0.UnixNano()}})
		s.Close()
	}
	if !errors.Is(err, ErrReadOnly) {
		t.Fatalf("err = %v, want ErrReadOnly", err)
	}
	// Queries still work on a read-only file.
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got, err := ro.Calls(context.Background(), Filter{}); err != nil || len(got) != 1 {
		t.Errorf("read-only query = %d, %v", len(got), err)
	}
}

func TestLocked(t *testing.T) {
	s, path := openTest(t, fixedClock(t0))
	batch := []record.Call{{ID: 1, Function: "main.a", Start: t0.UnixNano()}, {ID: 2, Function: "main.b", Start: t0.UnixNano()}}
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	err = s.WriteCalls(batch)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "retry") {
		t.Errorf("message %q says nothing actionable", err)
	}
	conn.ExecContext(context.Background(), "ROLLBACK")
	conn.Close()
	if err := s.WriteCalls(batch); err != nil {
		t.Fatalf("retry after unlock: %v", err)
	}
	got, _ := s.Calls(context.Background(), Filter{})
	if len(got) != 2 {
		t.Errorf("%d calls after retry, want 2", len(got))
	}
}

// requireRoot skips the test unless it runs as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mounts a tmpfs); run `sudo go test` to cover it")
	}
}

func mount(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "obs-test", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

func TestDiskFull(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	mount(t, dir, "size=1m")
	s, err := Open(filepath.Join(dir, "obs.db"), Options{Clock: fixedClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rngCalls := make([]record.Call, 2000)
	var id uint64
	var werr error
	for i := 0; i < 200 && werr == nil; i++ {
		for j := range rngCalls {
			id++
			rngCalls[j] = record.Call{ID: id, Function: "main.a", Start: t0.UnixNano() + int64(id), Status: record.StatusError, Error: strings.Repeat("x", 200)}
		}
		werr = s.WriteCalls(rngCalls)
	}
	if !errors.Is(werr, ErrDiskFull) {
		t.Fatalf("err = %v, want ErrDiskFull", werr)
	}
	if !strings.Contains(werr.Error(), "free space") {
		t.Errorf("message %q says nothing actionable", werr)
	}
	// Nothing of the failed batch is visible; earlier batches are intact.
	got, err := s.Calls(context.Background(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got)%len(rngCalls) != 0 {
		t.Errorf("%d calls: a partial batch was stored", len(got))
	}
}

func TestDefaultPath(t *testing.T) {
	t.Setenv("OBS_AGENT_DB", "/x/y.db")
	if got := DefaultPath(); got != "/x/y.db" {
		t.Errorf("with OBS_AGENT_DB: %s", got)
	}
	t.Setenv("OBS_AGENT_DB", "")
	t.Setenv("XDG_STATE_HOME", "/state")
	want := "/state/obs-agent/obs.db"
	if os.Geteuid() == 0 {
		want = "/var/lib/obs-agent/obs.db"
	}
	if got := DefaultPath(); got != want {
		t.Errorf("DefaultPath = %s, want %s", got, want)
	}
}

func TestNewStoreIsIncrementalWAL(t *testing.T) {
	s, _ := openTest(t, nil)
	var av int
	var mode string
	s.rdb.QueryRow("PRAGMA auto_vacuum").Scan(&av)
	s.rdb.QueryRow("PRAGMA journal_mode").Scan(&mode)
	if av != 2 || mode != "wal" {
		t.Errorf("auto_vacuum = %d, journal_mode = %s; want 2 (incremental), wal", av, mode)
	}
}

// TestOpenExplains checks that the vague errors SQLite gives on open are
// turned into their cause, in plain words: a directory named as the store
// ("unable to open database file (14)", "disk I/O error (10)") and a full
// file system under an existing store ("disk I/O error (4874)": the -shm
// can't grow). Neither message may name a flag: the file may be an archive.
func TestOpenExplains(t *testing.T) {
	dir := t.TempDir()
	for _, ro := range []bool{false, true} {
		_, err := Open(dir, Options{ReadOnly: ro})
		if err == nil || !strings.Contains(err.Error(), "it is a directory; a store is a file, e.g. "+filepath.Join(dir, "obs.db")) {
			t.Errorf("read-only %v: directory as store: %v", ro, err)
		}
	}

	requireRoot(t)
	full := t.TempDir()
	mount(t, full, "size=1m")
	path := filepath.Join(full, "obs.db")
	s, err := Open(path, Options{Clock: fixedClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, sfx := range []string{"-wal", "-shm"} {
		os.Remove(path + sfx)
	}
	f, err := os.Create(filepath.Join(full, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 4096))
	}
	f.Close()
	for _, ro := range []bool{false, true} {
		_, err := Open(path, Options{ReadOnly: ro})
		if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "bytes free in "+full) {
			t.Errorf("read-only %v: open on a full disk: %v, want ErrDiskFull saying how much is free", ro, err)
		}
		if err != nil && strings.Contains(err.Error(), "--") {
			t.Errorf("the store layer names a flag: %v", err)
		}
	}
}

// TestMigrateFromV2AndV3 upgrades a store of each version written today
// (2: before the session owner columns; 3: before the read structures):
// both reach the current version with their sessions readable, and a
// read-only open of the older store reads its sessions as they are.
func TestMigrateFromV2AndV3(t *testing.T) {
	ctx := context.Background()
	for _, from := range []int{2, 3} {
		t.Run(fmt.Sprint("v", from), func(t *testing.T) {
			path := oldSessionStore(t, from)
			ro, err := Open(path, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			ss, err := ro.Sessions(ctx)
			ro.Close()
			if err != nil || len(ss) != 1 || ss[0].PID != 42 || ss[0].AgentPID != 0 {
				t.Fatalf("read-only sessions of a v%d store: %+v, %v", from, ss, err)
			}

			s, err := Open(path, Options{Clock: fixedClock(t0)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var v, tables int
			s.rdb.QueryRow(`SELECT version FROM schema_version`).Scan(&v)
			s.rdb.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name IN ('call_spans', 'call_ranges', 'derived')`).Scan(&tables)
			if v != SchemaVersion || tables != 3 {
				t.Errorf("after migrate: version %d, %d of 3 read-structure tables; want %d", v, tables, SchemaVersion)
			}
			id, err := s.BeginSession(record.Session{PID: 7, Start: 2, AgentPID: 99, BootID: "b"})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.WriteCalls([]record.Call{{ID: id<<40 | 1, Function: "main.f", Start: t0.UnixNano(), Status: record.StatusError, Error: "e"}}); err != nil {
				t.Fatal(err)
			}
			ss, err = s.Sessions(ctx)
			if err != nil || len(ss) != 2 || ss[0].PID != 42 || ss[1].AgentPID != 99 || ss[1].BootID != "b" {
				t.Fatalf("sessions after migrate: %+v, %v", ss, err)
			}
			errs, err := s.Errors(ctx, Filter{})
			if err != nil || len(errs) != 1 {
				t.Errorf("errors after migrate: %v, %v", errs, err)
			}
		})
	}
}
