package ui

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// benchStore finds the six-hour, six-million-call benchmark store that
// internal/query's BenchmarkQueries builds and caches ($OBS_BENCH_STORE,
// else the newest store-v*-s<schema>.db in <tmp>/obs-agent-bench), and
// has that benchmark build it when there is none, so both benchmarks read
// the same store.
func benchStore(b *testing.B) string {
	if p := os.Getenv("OBS_BENCH_STORE"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	find := func() string {
		ms, _ := filepath.Glob(filepath.Join(os.TempDir(), "obs-agent-bench", fmt.Sprintf("store-v*-s%d.db", store.SchemaVersion)))
		sort.Slice(ms, func(i, j int) bool {
			a, _ := os.Stat(ms[i])
			c, _ := os.Stat(ms[j])
			return a.ModTime().After(c.ModTime())
		})
		if len(ms) == 0 {
			return ""
		}
		return ms[0]
	}
	if p := find(); p != "" {
		return p
	}
	b.Log("building the benchmark store with internal/query's BenchmarkQueries (minutes)")
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", "^BenchmarkQueries$/^$", "-benchtime", "1x", "./internal/query/")
	cmd.Dir = testutil.RepoRoot(b)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the benchmark store: %v\n%s", err, out)
	}
	if p := find(); p != "" {
		return p
	}
	b.Fatal("no benchmark store after building it (set $OBS_BENCH_STORE?)")
	return ""
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPages makes every API request each page makes against the
// benchmark store, each as its own sub-benchmark, and logs a table of wall
// and CPU time per request (target: 100 ms each, issue 9). The store's
// clock stops at 09:59 of its last hour, so ranges are absolute: "6h" is
// the store's six hours (whole hours: rollups), "1h" the last hour
// 08:59-09:59 as the UI's default range would ask.
func BenchmarkPages(b *testing.B) {
	path := benchStore(b)
	s, err := New(Options{DB: path, Token: testToken})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	q, err := query.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	sess, err := q.Sessions(ctx)
	if err != nil || len(sess) == 0 {
		b.Fatalf("sessions: %v", err)
	}
	base := time.Unix(0, sess[0].Start).UTC().Truncate(time.Hour)
	end := base.Add(6 * time.Hour)
	now := end.Add(-time.Minute)
	six := url.Values{"since": {base.Format(time.RFC3339)}, "until": {end.Format(time.RFC3339)}}
	hour := url.Values{"since": {now.Add(-time.Hour).Format(time.RFC3339)}, "until": {now.Format(time.RFC3339)}}

	// Subjects found through the layer: the busiest function, a fan-out
	// root (its tree is the largest) and a deep error.
	rows, _, err := q.Stats(ctx, store.Filter{Since: base, Until: end, Limit: 1}, "function")
	if err != nil {
		b.Fatal(err)
	}
	fn := rows[0].Key
	errs, err := q.Errors(ctx, store.Filter{Since: now.Add(-time.Hour), Until: now, Limit: 200})
	if err != nil || len(errs) == 0 {
		b.Fatalf("errors: %v", err)
	}
	deep := errs[0]
	for _, e := range errs {
		if len(e.Chain) > len(deep.Chain) {
			deep = e
		}
	}
	root := deep.Call.ID
	if len(deep.Chain) > 0 {
		root = deep.Chain[0].ID
	}

	// A fan-out request (over 1,000 calls): the root of the largest trees,
	// read up to the page's default limit of 2,000 calls. Its function is
	// the benchmark store's last (benchFuncName(199) in internal/query).
	fans, err := q.Calls(ctx, store.Filter{Since: now.Add(-50 * time.Minute), Until: now, Func: "example.com/store/pkg19.(*Server).Handler199", Limit: 50})
	if err != nil {
		b.Fatal(err)
	}
	var fan uint64
	for _, c := range fans {
		if c.ParentID == 0 {
			fan = c.ID
			break
		}
	}
	if fan == 0 {
		b.Fatal("no fan-out root in the benchmark store")
	}
	with := func(v url.Values, kv ...string) string {
		w := url.Values{}
		for k, x := range v {
			w[k] = x
		}
		for i := 0; i+1 < len(kv); i += 2 {
			w.Set(kv[i], kv[i+1])
		}
		return w.Encode()
	}
	// The page reads the slowest calls from the buckets (6 min over 6 h)
	// with the highest maximum.
	series, err := q.Series(ctx, store.Filter{Since: base, Until: end, Func: fn}, 60)
	if err != nil {
		b.Fatal(err)
	}
	var maxNs uint64
	var slowest time.Time
	for _, p := range series {
		if p.MaxNs > maxNs {
			maxNs, slowest = p.MaxNs, time.Unix(0, p.Start).UTC()
		}
	}
	reqs := []struct{ page, path string }{
		{"overview", "/api/sessions"},
		{"overview", "/api/stats?" + with(six)},
		{"overview", "/api/stats?" + with(hour)},
		{"overview", "/api/gaps?" + with(six, "limit", "1000")},
		{"overview", "/api/calls?" + with(six, "order", "newest", "limit", "15")},
		{"overview", "/api/calls?" + with(hour, "order", "newest", "limit", "15")},
		{"functions", "/api/stats?" + with(six, "by", "package")},
		{"functions", "/api/stats?" + with(six, "by", "module")},
		{"functions", "/api/stats?" + with(six, "func", "github.com/acme/api/*")},
		{"function", "/api/stats?" + with(six, "func", fn)},
		{"function", "/api/series?" + with(six, "func", fn, "buckets", "60")},
		{"function", "/api/series?" + with(hour, "func", fn, "buckets", "60")},
		{"function", "/api/errors?" + with(six, "func", fn, "limit", "20")},
		{"function", "/api/calls?" + with(url.Values{"since": {slowest.Format(time.RFC3339)}, "until": {slowest.Add(7 * time.Minute).Format(time.RFC3339)}},
			"func", fn, "limit", "200", "min_duration", fmt.Sprintf("%dns", maxNs/2))}, // one of the three, as the page asks
		{"errors", "/api/errors?" + with(six, "limit", "100")},
		{"errors", "/api/errors/groups?" + with(six)},
		{"call", fmt.Sprintf("/api/call/%d", deep.Call.ID)},
		{"call", fmt.Sprintf("/api/tree/%d", root)},
		{"call", fmt.Sprintf("/api/tree/%d", fan)},
		{"resources", "/api/resources?" + with(six, "limit", "10000")},
		{"resources", "/api/errors?" + with(six, "limit", "300")},
		{"store", "/api/partitions"},
		{"store", "/api/retention"},
	}
	fetch := func(p string) {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+p, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		// The body is read, not decoded: the time is the server's.
		if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d %v", p, resp.StatusCode, err)
		}
	}
	// The first listing of the partitions, before SQLite's page cache
	// holds the pages it reads.
	c0, w0 := cpuNow(), time.Now()
	fetch("/api/partitions")
	firstParts := fmt.Sprintf("%-10s %9.1f %9.1f  %s (first request)\n", "store", float64(time.Since(w0).Microseconds())/1e3, float64((cpuNow()-c0).Microseconds())/1e3, "/api/partitions")
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-10s %9s %9s  %s\n", "PAGE", "WALL ms", "CPU ms", "REQUEST")
	for _, r := range reqs {
		name := r.page + strings.NewReplacer("/", "_", "?", "_").Replace(strings.SplitN(r.path, "&", 2)[0][4:])
		fetch(r.path) // warm: the first read of a table pays for its pages
		var wall, cpu time.Duration
		var n int
		b.Run(name, func(b *testing.B) {
			c0, w0 := cpuNow(), time.Now()
			for b.Loop() {
				fetch(r.path)
			}
			wall, cpu, n = time.Since(w0), cpuNow()-c0, b.N
		})
		if n > 0 {
			fmt.Fprintf(&table, "%-10s %9.1f %9.1f  %s\n", r.page, float64(wall.Microseconds())/1e3/float64(n), float64(cpu.Microseconds())/1e3/float64(n), r.path)
		}
	}
	fmt.Print(table.String() + firstParts)
}
