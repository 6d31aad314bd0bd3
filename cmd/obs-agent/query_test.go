package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

// testStore fills a store with a small, known trace ending a few minutes ago
// and returns its path and the first call id.
func testStore(t *testing.T) (string, uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "obs.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	sid, err := s.BeginSession(record.Session{PID: 4242, Binary: "/srv/api", Start: now.Add(-time.Hour).UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterFunctions([]record.Function{
		{Name: "main.main", Package: "main", Module: "example.com/api"},
		{Name: "example.com/api/db.(*Conn).Query", Package: "example.com/api/db", Module: "example.com/api"},
		{Name: "example.com/api/db.Map[go.shape.int]", Package: "example.com/api/db", Module: "example.com/api"},
	}); err != nil {
		t.Fatal(err)
	}
	b := sid << 40
	at := now.Add(-5 * time.Minute).UnixNano()
	calls := []record.Call{
		{ID: b + 1, PID: 4242, GoID: 1, Function: "main.main", Start: at, Duration: 3e6},
		{ID: b + 2, ParentID: b + 1, PID: 4242, GoID: 1, Function: "example.com/api/db.(*Conn).Query", Start: at + 1000, Duration: 2e6, Status: record.StatusError, ErrorType: "*errors.errorString", Error: "connection refused"},
		{ID: b + 3, ParentID: b + 2, PID: 4242, GoID: 9, Function: "example.com/api/db.Map[go.shape.int]", Start: at + 2000, Duration: 500, Status: record.StatusPanic, Error: "index out of range"},
		{ID: b + 4, PID: 4242, GoID: 1, Function: "main.main", Start: now.Add(-3 * time.Hour).UnixNano(), Duration: 10},
	}
	if err := s.WriteCalls(calls); err != nil {
		t.Fatal(err)
	}
	var h [record.HistBuckets]uint64
	h[11] = 99 // 1024..2047 ns
	h[21] = 1  // ~2ms
	if err := s.WriteStats([]record.FuncStats{
		{PID: 4242, Function: "example.com/api/db.(*Conn).Query", IntervalStart: at, IntervalEnd: at + 1e9, Calls: 100, Errors: 7, Panics: 0, Recorded: 90, Sampled: 6, Dropped: 4, TotalNs: 300000, MaxNs: 2e6, Hist: h},
		{PID: 4242, Function: "main.main", IntervalStart: at, IntervalEnd: at + 1e9, Calls: 1, Recorded: 1, TotalNs: 3e6, MaxNs: 3e6},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteGaps([]record.Gap{{PID: 4242, Function: "example.com/api/db.(*Conn).Query", Start: at, End: at + 250e6, Reason: "overload"}}); err != nil {
		t.Fatal(err)
	}
	cpu := 12.5
	rss := uint64(50 << 20)
	if err := s.WriteSamples([]record.ResourceSample{{PID: 4242, Time: at, CPUPercent: &cpu, RSSBytes: &rss}}); err != nil {
		t.Fatal(err)
	}
	return path, b + 1
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), err
}

func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestQueryCallsJSON(t *testing.T) {
	db, first := testStore(t)
	out, err := runCLI(t, "query", "calls", "--db", db, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	rows := jsonLines(t, out)
	if len(rows) != 3 { // the 3h-old call is outside the default --since 1h
		t.Fatalf("%d rows, want 3:\n%s", len(rows), out)
	}
	for _, k := range []string{"id", "parent_id", "pid", "goid", "function", "start", "duration_ns", "status", "error", "error_type"} {
		if _, ok := rows[0][k]; !ok {
			t.Errorf("key %q missing in %v", k, rows[0])
		}
	}
	r0, r1 := rows[0], rows[1]
	if r0["id"] != float64(first) || r0["parent_id"] != nil || r0["error"] != nil || r0["error_type"] != nil || r0["status"] != "ok" {
		t.Errorf("root row %v", r0)
	}
	if r1["parent_id"] != float64(first) || r1["status"] != "error" || r1["error"] != "connection refused" || r1["error_type"] != "*errors.errorString" || r1["duration_ns"] != float64(2e6) || r1["pid"] != float64(4242) {
		t.Errorf("error row %v", r1)
	}
	st, _ := r1["start"].(string)
	if ts, err := time.Parse(time.RFC3339Nano, st); err != nil || !strings.HasSuffix(st, "Z") || len(st) != len("2006-01-02T15:04:05.000000000Z") || ts.IsZero() {
		t.Errorf("start %q is not RFC 3339 UTC with nanoseconds", st)
	}

	out, _ = runCLI(t, "query", "calls", "--db", db, "--format", "json", "--since", "0")
	if n := len(jsonLines(t, out)); n != 4 {
		t.Errorf("--since 0: %d rows, want 4", n)
	}
	out, _ = runCLI(t, "query", "calls", "--db", db, "--format", "json", "--func", "example.com/api/db.Map[*]")
	if rows := jsonLines(t, out); len(rows) != 1 || rows[0]["status"] != "panic" {
		t.Errorf("--func with [: %v", rows)
	}
	out, _ = runCLI(t, "query", "calls", "--db", db, "--format", "json", "--status", "error", "--status", "panic")
	if n := len(jsonLines(t, out)); n != 2 {
		t.Errorf("--status x2: %d rows", n)
	}
	out, _ = runCLI(t, "query", "calls", "--db", db, "--format", "json", "--status", "ok,panic", "--min-duration", "1ms", "--limit", "1")
	if rows := jsonLines(t, out); len(rows) != 1 || rows[0]["function"] != "main.main" {
		t.Errorf("combined filters: %v", rows)
	}
	out, _ = runCLI(t, "query", "calls", "--db", db, "--format", "csv")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 || !strings.HasPrefix(lines[0], "id,parent_id,pid") {
		t.Errorf("csv:\n%s", out)
	}
	out, _ = runCLI(t, "query", "calls", "--db", db)
	if !strings.Contains(out, "connection refused") || !strings.Contains(out, "FUNCTION") {
		t.Errorf("table:\n%s", out)
	}
}

func TestQueryErrorsChain(t *testing.T) {
	db, first := testStore(t)
	out, err := runCLI(t, "query", "errors", "--db", db, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	rows := jsonLines(t, out)
	if len(rows) != 2 || rows[0]["status"] != "panic" || rows[1]["status"] != "error" {
		t.Fatalf("errors not newest first: %v", rows)
	}
	chain, _ := rows[0]["chain"].([]any)
	if len(chain) != 2 {
		t.Fatalf("chain %v", rows[0]["chain"])
	}
	c0 := chain[0].(map[string]any)
	c1 := chain[1].(map[string]any)
	if c0["id"] != float64(first) || c0["function"] != "main.main" || c1["function"] != "example.com/api/db.(*Conn).Query" {
		t.Errorf("chain %v", chain)
	}
	out, _ = runCLI(t, "query", "errors", "--db", db)
	if !strings.Contains(out, "main.main > example.com/api/db.(*Conn).Query > example.com/api/db.Map[go.shape.int]") {
		t.Errorf("table chain:\n%s", out)
	}
}

func TestQueryStats(t *testing.T) {
	db, _ := testStore(t)
	out, err := runCLI(t, "query", "stats", "--db", db, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	rows := jsonLines(t, out)
	if len(rows) != 2 {
		t.Fatalf("rows %v", rows)
	}
	r := rows[0]
	want := map[string]any{"function": "example.com/api/db.(*Conn).Query", "calls": 100.0, "errors": 7.0, "panics": 0.0,
		"recorded": 90.0, "lost": 10.0, "sampled": 6.0, "p50_ns": 2047.0, "p90_ns": 2047.0, "p99_ns": 2047.0,
		"max_ns": 2e6, "mean_ns": 3000.0, "gaps": 1.0, "gap_ms": 250.0}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("stats %s = %v, want %v", k, r[k], v)
		}
	}
	out, _ = runCLI(t, "query", "stats", "--db", db, "--format", "json", "--by", "package")
	if rows := jsonLines(t, out); len(rows) != 2 || rows[0]["package"] != "example.com/api/db" {
		t.Errorf("--by package %v", rows)
	}
	out, _ = runCLI(t, "query", "stats", "--db", db)
	if !strings.Contains(out, "probe gaps") || !strings.Contains(out, "overload") {
		t.Errorf("table lacks the gaps:\n%s", out)
	}
	if _, err := runCLI(t, "query", "stats", "--db", db, "--by", "file"); err == nil {
		t.Error("--by file accepted")
	}
}

func TestQueryGroups(t *testing.T) {
	db, _ := testStore(t)
	out, err := runCLI(t, "query", "groups", "--db", db, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	rows := jsonLines(t, out)
	if len(rows) != 1 || rows[0]["group"] != "example.com/api" || rows[0]["calls"] != 101.0 || rows[0]["errors"] != 7.0 || rows[0]["p99_ns"] == nil {
		t.Errorf("groups %v", rows)
	}
	out, _ = runCLI(t, "query", "groups", "--db", db, "--format", "json", "--by", "package")
	if rows := jsonLines(t, out); len(rows) != 2 || rows[0]["package"] == nil {
		t.Errorf("groups by package %v", rows)
	}
}

func TestQueryTree(t *testing.T) {
	db, first := testStore(t)
	out, err := runCLI(t, "query", "tree", fmt.Sprint(first), "--db", db)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "main.main") || !strings.HasPrefix(lines[1], "  example.com/api/db.(*Conn).Query") ||
		!strings.HasPrefix(lines[2], "    example.com/api/db.Map") || !strings.Contains(lines[2], "panic") || !strings.Contains(lines[1], "2.00ms") {
		t.Errorf("tree:\n%s", out)
	}
	out, _ = runCLI(t, "query", "tree", fmt.Sprint(first), "--db", db, "--format", "json")
	if rows := jsonLines(t, out); len(rows) != 3 || rows[2]["depth"] != 2.0 {
		t.Errorf("tree json %v", rows)
	}
	if _, err := runCLI(t, "query", "tree", "12345", "--db", db); err == nil || !strings.Contains(err.Error(), "no call 12345") {
		t.Errorf("missing id: %v", err)
	}
}

func TestQueryResources(t *testing.T) {
	db, _ := testStore(t)
	out, err := runCLI(t, "query", "resources", "--db", db, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	rows := jsonLines(t, out)
	if len(rows) != 1 {
		t.Fatalf("rows %v", rows)
	}
	r := rows[0]
	for _, k := range []string{"pid", "time", "cpu_percent", "rss_bytes", "vms_bytes", "threads", "open_fds", "read_bytes", "write_bytes", "voluntary_ctx_switches", "involuntary_ctx_switches", "goroutines"} {
		if _, ok := r[k]; !ok {
			t.Errorf("key %q missing", k)
		}
	}
	if r["cpu_percent"] != 12.5 || r["rss_bytes"] != float64(50<<20) || r["vms_bytes"] != nil || r["goroutines"] != nil {
		t.Errorf("resources %v", r)
	}
}

func TestQueryMissingStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "obs.db")
	for _, sub := range []string{"calls", "errors", "stats", "resources", "groups"} {
		_, err := runCLI(t, "query", sub, "--db", path)
		if err == nil || !strings.Contains(err.Error(), "no store at "+path) || !strings.Contains(err.Error(), "obs-agent attach") {
			t.Errorf("%s: err = %v", sub, err)
		}
	}
	if _, err := runCLI(t, "query", "calls", "--db", path); err == nil {
		t.Fatal("no error")
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*")); len(matches) != 0 {
		t.Errorf("query created %v", matches)
	}
}

func TestQueryBadFlags(t *testing.T) {
	db, _ := testStore(t)
	for _, args := range [][]string{
		{"query", "calls", "--db", db, "--status", "weird"},
		{"query", "calls", "--db", db, "--since", "yesterday"},
		{"query", "calls", "--db", db, "--format", "xml"},
		{"query", "tree", "abc", "--db", db},
		{"query", "errors", "--db", db, "--status", "ok"},
	} {
		if _, err := runCLI(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
