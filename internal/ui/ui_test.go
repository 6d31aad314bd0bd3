package ui

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/render"
	"github.com/obs-agent/obs-agent/internal/result"
	"github.com/obs-agent/obs-agent/internal/store"
)

const testToken = "test-token-0123456789"

// fixture is a writable store with one session: a root call on goroutine
// 1 with a child on the same goroutine, a child on a goroutine it spawned,
// and an error at the bottom of that chain.
type fixture struct {
	s    *store.Store
	path string
	t0   int64
	ids  struct{ root, child, spawned, failed uint64 }
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "obs.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := &fixture{s: s, path: path, t0: time.Now().Add(-10 * time.Minute).UnixNano()}
	sid, err := s.BeginSession(record.Session{PID: 4242, Binary: "/bin/app", GoVersion: "go1.26", Patterns: "main.*", Start: f.t0})
	if err != nil {
		t.Fatal(err)
	}
	fns := []record.Function{{Name: "main.root", Package: "main", Module: "example.com/app"}, {Name: "main.child", Package: "main", Module: "example.com/app"},
		{Name: "main.worker", Package: "main", Module: "example.com/app"}, {Name: "main.fail", Package: "main", Module: "example.com/app"}}
	if err := s.RegisterFunctions(fns); err != nil {
		t.Fatal(err)
	}
	id := func(n uint64) uint64 { return sid<<40 | n }
	f.ids.root, f.ids.child, f.ids.spawned, f.ids.failed = id(1), id(2), id(3), id(4)
	calls := []record.Call{
		{ID: f.ids.root, PID: 4242, GoID: 1, Function: "main.root", Start: f.t0, Duration: 5e6},
		{ID: f.ids.child, ParentID: f.ids.root, PID: 4242, GoID: 1, Function: "main.child", Start: f.t0 + 1e5, Duration: 1e6},
		{ID: f.ids.spawned, ParentID: f.ids.root, PID: 4242, GoID: 7, Function: "main.worker", Start: f.t0 + 2e5, Duration: 3e6},
		{ID: f.ids.failed, ParentID: f.ids.spawned, PID: 4242, GoID: 7, Function: "main.fail", Start: f.t0 + 3e5, Duration: 1e5,
			Status: record.StatusError, ErrorType: "*errors.errorString", Error: "disk on fire"},
	}
	if err := s.WriteCalls(calls); err != nil {
		t.Fatal(err)
	}
	st := record.FuncStats{PID: 4242, Function: "main.fail", IntervalStart: f.t0, IntervalEnd: f.t0 + 60e9, Calls: 1, Errors: 1, Recorded: 1, TotalNs: 1e5, MaxNs: 1e5}
	st.Hist[17] = 1
	if err := s.WriteStats([]record.FuncStats{st}); err != nil {
		t.Fatal(err)
	}
	cpu, rss := 12.5, uint64(1<<20)
	if err := s.WriteSamples([]record.ResourceSample{{PID: 4242, Time: f.t0, CPUPercent: &cpu, RSSBytes: &rss}}); err != nil {
		t.Fatal(err)
	}
	return f
}

func newServer(t *testing.T, db string) *httptest.Server {
	t.Helper()
	s, err := New(Options{DB: db, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func get(t *testing.T, ts *httptest.Server, path string, auth bool) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
	if auth {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestTokenRequired(t *testing.T) {
	f := newFixture(t)
	ts := newServer(t, f.path)
	for _, p := range []string{"/", "/functions", "/static/app.js", "/api/sessions", "/api/call/1", "/api/events", "/nope", "/?token=wrong"} {
		resp, body := get(t, ts, p, false)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", p, resp.StatusCode)
		}
		if bytes.Contains(body, []byte("disk on fire")) || bytes.Contains(body, []byte("<script")) {
			t.Errorf("GET %s without the token leaked content: %s", p, body)
		}
	}
	// The first visit carries the token: it becomes a cookie and leaves the URL.
	resp, _ := get(t, ts, "/errors?since=1h&token="+testToken, false)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first visit: %d, want 303", resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); strings.Contains(loc, "token") || !strings.HasPrefix(loc, "/errors?since=1h") {
		t.Errorf("redirect to %q: want the same view without the token", loc)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == cookieName {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Value != testToken {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, the token", cookie)
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/sessions", nil)
	req.AddCookie(cookie)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusOK {
		t.Errorf("with the cookie: %d, want 200", r2.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodPost, ts.URL+"/api/sessions", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	r3, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r3.Body.Close()
	if r3.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", r3.StatusCode)
	}
}

func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	ts := newServer(t, f.path)
	for _, p := range []string{"/", "/api/sessions", "/static/app.js", "/api/nope"} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+p, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Origin", "https://evil.example")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", p, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q allows unsafe sources", p, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", p, h)
		}
		for k := range h {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("%s: CORS header %s", p, k)
			}
		}
	}
}

// TestAssetsStrict checks what the CSP relies on (no inline script or
// style in the page) and the weight budget of a page's assets.
func TestAssetsStrict(t *testing.T) {
	page, err := fs.ReadFile(assets, "assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`<script(\s[^>]*)?>[^<]+</script>|<style|\sstyle=|\son[a-z]+=`).Match(page) {
		t.Errorf("index.html has inline script, style or event handlers, which the CSP blocks")
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(assets, p)
		zw.Write(b)
		return nil
	})
	zw.Close()
	if gz.Len() > 300<<10 {
		t.Errorf("assets weigh %d bytes compressed, budget 300 KiB", gz.Len())
	}
	t.Logf("assets: %d bytes gzip-compressed", gz.Len())
}

// jsonLines parses a renderer's JSON Lines into values.
func jsonLines(t *testing.T, fn func(io.Writer) error) []any {
	t.Helper()
	var buf bytes.Buffer
	if err := fn(&buf); err != nil {
		t.Fatal(err)
	}
	out := []any{}
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func decode(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return v
}

// TestAPIMatchesQuery checks the API answers with exactly the objects of
// `query --format json` for the same question.
func TestAPIMatchesQuery(t *testing.T) {
	f := newFixture(t)
	ts := newServer(t, f.path)
	q := query.New(f.s)
	ctx := context.Background()
	all := store.Filter{Limit: maxLimit}

	calls, err := q.Calls(ctx, all)
	if err != nil {
		t.Fatal(err)
	}
	_, body := get(t, ts, "/api/calls?limit=0", true)
	if got, want := decode(t, body), jsonLines(t, func(w io.Writer) error { return render.Calls(w, render.JSON, calls) }); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("/api/calls\n got %v\nwant %v", got, want)
	}
	if len(calls) != 4 {
		t.Errorf("%d calls, want 4", len(calls))
	}

	errs, err := q.Errors(ctx, all)
	if err != nil {
		t.Fatal(err)
	}
	_, body = get(t, ts, "/api/errors?limit=0", true)
	got := decode(t, body)
	if want := jsonLines(t, func(w io.Writer) error { return render.Errors(w, render.JSON, errs) }); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("/api/errors\n got %v\nwant %v", got, want)
	}
	e := got.([]any)[0].(map[string]any)
	chain := e["chain"].([]any)
	if e["error"] != "disk on fire" || len(chain) != 2 || chain[0].(map[string]any)["function"] != "main.root" || chain[1].(map[string]any)["function"] != "main.worker" {
		t.Errorf("error %v: want disk on fire with chain main.root > main.worker", e)
	}

	for _, by := range []result.Grouping{result.ByFunction, result.ByPackage, result.ByModule} {
		rows, _, err := q.Stats(ctx, store.Filter{}, by)
		if err != nil {
			t.Fatal(err)
		}
		_, body = get(t, ts, "/api/stats?by="+string(by), true)
		got := decode(t, body).(map[string]any)
		if want := jsonLines(t, func(w io.Writer) error { return render.Stats(w, render.JSON, by, rows, nil) }); fmt.Sprint(got["rows"]) != fmt.Sprint(want) {
			t.Errorf("/api/stats?by=%s\n got %v\nwant %v", by, got["rows"], want)
		}
	}

	tree, err := q.Tree(ctx, f.ids.root, defaultTree)
	if err != nil {
		t.Fatal(err)
	}
	_, body = get(t, ts, fmt.Sprintf("/api/tree/%d", f.ids.root), true)
	gt := decode(t, body).(map[string]any)
	if want := jsonLines(t, func(w io.Writer) error { return render.Tree(w, render.JSON, tree) }); fmt.Sprint(gt["calls"]) != fmt.Sprint(want) {
		t.Errorf("/api/tree\n got %v\nwant %v", gt["calls"], want)
	}
	// The spawned goroutine's call nests under its spawner.
	for _, c := range gt["calls"].([]any) {
		m := c.(map[string]any)
		if m["function"] == "main.fail" && m["depth"].(float64) != 2 {
			t.Errorf("main.fail at depth %v, want 2 (root > worker on goroutine 7 > fail)", m["depth"])
		}
	}

	_, body = get(t, ts, fmt.Sprintf("/api/call/%d", f.ids.failed), true)
	gc := decode(t, body).(map[string]any)
	if anc := gc["ancestors"].([]any); len(anc) != 2 || gc["call"].(map[string]any)["function"] != "main.fail" {
		t.Errorf("/api/call: %v", gc)
	}

	parts, err := q.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, body = get(t, ts, "/api/partitions", true)
	if want := jsonLines(t, func(w io.Writer) error { return render.Partitions(w, render.JSON, parts) }); fmt.Sprint(decode(t, body)) != fmt.Sprint(want) {
		t.Errorf("/api/partitions\n got %s\nwant %v", body, want)
	}

	_, body = get(t, ts, "/api/resources", true)
	if rs := decode(t, body).([]any); len(rs) != 1 || rs[0].(map[string]any)["cpu_percent"] != 12.5 {
		t.Errorf("/api/resources: %s", body)
	}

	since := url.QueryEscape(time.Unix(0, f.t0-30e9).UTC().Format(time.RFC3339))
	until := url.QueryEscape(time.Unix(0, f.t0+90e9).UTC().Format(time.RFC3339))
	_, body = get(t, ts, "/api/series?func=main.fail&buckets=4&since="+since+"&until="+until, true)
	var series []map[string]any
	json.Unmarshal(body, &series)
	var n float64
	for _, p := range series {
		n += p["calls"].(float64)
	}
	if len(series) != 4 || n != 1 {
		t.Errorf("/api/series: %s, want 4 buckets summing to 1 call", body)
	}

	_, body = get(t, ts, "/api/errors/groups", true)
	if g := decode(t, body).(map[string]any)["groups"].([]any); len(g) != 1 || g[0].(map[string]any)["count"].(float64) != 1 {
		t.Errorf("/api/errors/groups: %s", body)
	}
}

func TestBadParameters(t *testing.T) {
	f := newFixture(t)
	ts := newServer(t, f.path)
	cases := map[string]string{
		"/api/calls?since=yesterday":                   "since",
		"/api/calls?until=-5m":                         "until",
		"/api/calls?since=1m&until=2h":                 "until",
		"/api/calls?limit=-1":                          "limit",
		"/api/calls?limit=10001":                       "limit",
		"/api/calls?limit=x":                           "limit",
		"/api/calls?pid=0":                             "pid",
		"/api/calls?pid=99999999999":                   "pid",
		"/api/calls?status=fine":                       "status",
		"/api/calls?min_duration=fast":                 "min_duration",
		"/api/calls?fnc=main.*":                        "fnc",
		"/api/errors?status=ok":                        "status",
		"/api/errors/groups?limit=5":                   "limit",
		"/api/stats?by=file":                           "by",
		"/api/stats?min_duration=1s":                   "min_duration",
		"/api/series?func=main.*":                      "since",
		"/api/series?since=1h&buckets=0":               "buckets",
		"/api/series?since=1h&buckets=100000":          "buckets",
		"/api/resources?func=main.*":                   "func",
		"/api/gaps?since=never":                        "since",
		"/api/sessions?pid=1":                          "pid",
		"/api/partitions?x=1":                          "x",
		"/api/retention?x=1":                           "x",
		"/api/retention/settings?since=1h":             "since",
		"/api/call/abc":                                "id",
		"/api/call/0":                                  "id",
		"/api/call/1?limit=3":                          "limit",
		"/api/tree/-4":                                 "id",
		"/api/tree/1?limit=0":                          "limit",
		"/api/tree/1?limit=20001":                      "limit",
		"/api/calls?func=" + strings.Repeat("a", 1025): "func",
		"/api/calls?order=random":                      "order",
		"/api/events?x=1":                              "x",
	}
	for p, param := range cases {
		resp, body := get(t, ts, p, true)
		var e struct{ Error, Param string }
		json.Unmarshal(body, &e)
		if resp.StatusCode != http.StatusBadRequest || e.Param != param || e.Error == "" {
			t.Errorf("GET %s: %d %s, want 400 naming %q", p, resp.StatusCode, body, param)
		}
	}
}

func TestNotFound(t *testing.T) {
	f := newFixture(t)
	ts := newServer(t, f.path)
	missing := f.ids.failed + 1000
	for _, p := range []string{fmt.Sprintf("/api/call/%d", missing), fmt.Sprintf("/api/tree/%d", missing), "/api/nope", "/nope"} {
		resp, body := get(t, ts, p, true)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d %s, want 404", p, resp.StatusCode, body)
		}
	}
	// The views all serve the page.
	for v := range views {
		resp, body := get(t, ts, v, true)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`src="/static/app.js"`)) {
			t.Errorf("GET %s: %d", v, resp.StatusCode)
		}
	}
}

// TestNoStoreYet: the UI starts before the agent has created the store
// (run --ui), answers 503 until it exists, then serves it.
func TestNoStoreYet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.db")
	ts := newServer(t, path)
	resp, _ := get(t, ts, "/api/sessions", true)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("before the store exists: %d, want 503", resp.StatusCode)
	}
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.BeginSession(record.Session{PID: 1, Binary: "/x", Start: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, ts, "/api/sessions", true)
	if resp.StatusCode != http.StatusOK || len(decode(t, body).([]any)) != 1 {
		t.Fatalf("after: %d %s", resp.StatusCode, body)
	}
}

// TestWhileWriting reads the API while another goroutine writes calls to
// the store (as an agent does): every answer is whole, the count never
// goes back, and the last read sees every call.
func TestWhileWriting(t *testing.T) {
	f := newFixture(t)
	ts := newServer(t, f.path)
	const batches, per = 40, 50
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		next := f.ids.failed + 1
		for b := 0; b < batches; b++ {
			calls := make([]record.Call, per)
			for i := range calls {
				calls[i] = record.Call{ID: next, PID: 4242, GoID: 9, Function: "main.child", Start: f.t0 + int64(1e6+next%1e6), Duration: 10}
				next++
			}
			if err := f.s.WriteCalls(calls); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	count := func() int {
		resp, body := get(t, ts, "/api/calls?limit=0&func=main.child", true)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		return len(decode(t, body).([]any))
	}
	last, reads := 0, 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		n := count()
		reads++
		if n < last {
			t.Fatalf("calls went from %d to %d", last, n)
		}
		last = n
	}
	wg.Wait()
	if n := count(); n != 1+batches*per {
		t.Errorf("after the writer: %d calls, want %d", n, 1+batches*per)
	}
	t.Logf("%d reads while writing", reads)
}

func TestCheckListen(t *testing.T) {
	ok := []struct {
		addr   string
		remote bool
	}{{"127.0.0.1:7070", false}, {"localhost:0", false}, {"[::1]:8080", false}, {"0.0.0.0:7070", true}, {"10.1.2.3:65535", true}}
	for _, c := range ok {
		if err := CheckListen("listen", c.addr, c.remote); err != nil {
			t.Errorf("%s: %v", c.addr, err)
		}
	}
	bad := map[string]string{"0.0.0.0:7070": "--allow-remote", "10.1.2.3:80": "--allow-remote", "127.0.0.1:70000": "0..65535",
		"127.0.0.1:-1": "0..65535", "127.0.0.1": "HOST:PORT", "example.com:80": "IP address", ":7070": "IP address"}
	for addr, want := range bad {
		err := CheckListen("listen", addr, false)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--listen") {
			t.Errorf("%s: %v, want an error naming --listen and %q", addr, err, want)
		}
	}
}

// TestRetentionSettingsAPI: /api/sessions carries each session's retention
// and archive (null when not known), and /api/retention/settings the
// running agent's.
func TestRetentionSettingsAPI(t *testing.T) {
	f := newFixture(t) // its session recorded no settings
	id, err := f.s.BeginSession(record.Session{PID: 7, Binary: "/bin/app", Start: f.t0, Retention: 3 * time.Hour, ArchiveDir: "/srv/archive"})
	if err != nil {
		t.Fatal(err)
	}
	ts := newServer(t, f.path)
	resp, body := get(t, ts, "/api/sessions", true)
	var ss []struct {
		ID          uint64  `json:"id"`
		RetentionNs *int64  `json:"retention_ns"`
		Archive     *string `json:"archive"`
	}
	if err := json.Unmarshal(body, &ss); err != nil || resp.StatusCode != http.StatusOK || len(ss) != 2 {
		t.Fatalf("/api/sessions: %d %s (%v)", resp.StatusCode, body, err)
	}
	if ss[0].RetentionNs != nil || ss[0].Archive != nil {
		t.Errorf("a session without settings: retention %v, archive %v; want null", ss[0].RetentionNs, ss[0].Archive)
	}
	if ss[1].ID != id || ss[1].RetentionNs == nil || *ss[1].RetentionNs != int64(3*time.Hour) || ss[1].Archive == nil || *ss[1].Archive != "/srv/archive" {
		t.Errorf("session %d: %s", id, body)
	}
	resp, body = get(t, ts, "/api/retention/settings", true)
	want := fmt.Sprintf(`[{"session":%d,"running":true,"retention_ns":%d,"archive":"/srv/archive"}]`, id, int64(3*time.Hour))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != want {
		t.Errorf("/api/retention/settings: %d %s, want %s", resp.StatusCode, body, want)
	}
}
