package browsertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

// chromium finds the browser: $CHROME, else Debian's headless shell or
// full Chromium.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROME"), "/usr/bin/chromium-headless-shell", "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no Chromium: install Debian's chromium-headless-shell (scripts/deps.sh does) or set $CHROME")
	return ""
}

// agentBinary builds cmd/obs-agent once.
func agentBinary(t *testing.T) string {
	t.Helper()
	root := testutil.RepoRoot(t)
	out := filepath.Join(t.TempDir(), "obs-agent")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/obs-agent")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build obs-agent: %v\n%s", err, b)
	}
	return out
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok || !strings.Contains(strings.Join(args, " "), " -- ") {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
		}
	}
	return out
}

// jsonLines runs `obs-agent query ... --format json` and decodes its lines.
func jsonLines(t *testing.T, bin string, args ...string) []map[string]any {
	t.Helper()
	out := run(t, bin, append(args, "--format", "json")...)
	var rows []map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, m)
	}
	return rows
}

// browser starts headless Chromium and collects console errors and
// uncaught exceptions.
func browser(t *testing.T) (context.Context, *console) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // root in CI
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	c := &console{}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.Type == chromedp.ConsoleException {
				c.mu.Lock()
				c.msgs = append(c.msgs, m.String()+" "+m.URL)
				c.mu.Unlock()
			}
		}
	}()
	return ctx, c
}

// console holds the page's errors, warnings and uncaught exceptions.
type console struct {
	mu   sync.Mutex
	msgs []string
}

func (c *console) reset() { c.mu.Lock(); c.msgs = nil; c.mu.Unlock() }

// problems are the messages not containing any of ignore.
func (c *console) problems(ignore ...string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
next:
	for _, m := range c.msgs {
		for _, i := range ignore {
			if strings.Contains(m, i) {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// commas formats n as the page does (toLocaleString('en-US')).
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// serveUI starts `obs-agent ui` and returns the URL it printed.
func serveUI(t *testing.T, bin, db string) string {
	t.Helper()
	cmd := exec.Command(bin, "ui", "--db", db, "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("read the UI's URL: %v", err)
	}
	url := strings.TrimSpace(line)
	if !strings.Contains(url, "?token=") {
		t.Fatalf("first line %q: want a URL with a token", url)
	}
	return url
}

// shots is where screenshots go: $OBS_UI_SCREENSHOTS (CI keeps them as
// artifacts), else the test's temporary directory.
func shots(t *testing.T) string {
	if d := os.Getenv("OBS_UI_SCREENSHOTS"); d != "" {
		os.MkdirAll(d, 0o755)
		return d
	}
	return t.TempDir()
}

// open navigates to a view and waits for its first complete draw.
func open(t *testing.T, ctx context.Context, base, path string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS(`body[data-loaded]`))); err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 makes a PNG
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestViews traces the bundled programs into a store, serves it with
// `obs-agent ui`, and checks each view in Chromium against `obs-agent
// query --format json`.
func TestViews(t *testing.T) {
	testutil.RequireRoot(t)
	chromium(t)
	bin := agentBinary(t)
	calltree := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	errs := testutil.BuildProgram(t, testutil.Build{Program: "errs"})
	db := filepath.Join(t.TempDir(), "obs.db")
	archive := t.TempDir()
	common := []string{"run", "--db", db, "-f", "main.*", "--stats-interval", "1s", "--sample-interval", "100ms",
		"--retention", "30h", "--archive", archive}
	run(t, bin, append(common, "--", calltree, "multi", "3")...)
	run(t, bin, append(common, "--", calltree, "hotcool", "100", "300")...)
	run(t, bin, append(common, "--", errs, "errors", "4")...)
	run(t, bin, append(common, "--", errs, "recover")...)

	url := serveUI(t, bin, db)
	base := url[:strings.Index(url, "/?token=")]
	ctx, cons := browser(t)
	dir := shots(t)

	// Without the token the page is refused.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	refused := eval[string](t, ctx, `document.body.textContent`)
	if !strings.Contains(refused, "missing token") {
		t.Fatalf("without the token the page shows %q", refused)
	}
	cons.reset() // the refused page logged its 401
	// The printed URL sets the cookie and lands on the overview.
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`body[data-loaded]`))); err != nil {
		t.Fatal(err)
	}

	t.Run("overview", func(t *testing.T) {
		open(t, ctx, base, "/?since=0")
		n := eval[int](t, ctx, `document.querySelectorAll('#sessions tbody tr').length`)
		if n != 4 {
			t.Errorf("%d sessions shown, want 4", n)
		}
		// Latest calls: the newest 15 of `query calls`, newest first.
		all := jsonLines(t, bin, "query", "calls", "--db", db, "--since", "0", "--limit", "0")
		var want []string
		for i := len(all) - 1; i >= 0 && len(want) < 15; i-- {
			want = append(want, strconv.FormatFloat(all[i]["id"].(float64), 'f', 0, 64)+" "+all[i]["function"].(string))
		}
		got := eval[[]string](t, ctx, `[...document.querySelectorAll('#latest tbody tr')].map(r => r.dataset.id + ' ' + r.cells[1].textContent)`)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("latest calls\n got %v\nwant %v", got, want)
		}
		screenshot(t, ctx, dir, "overview")
	})

	t.Run("functions", func(t *testing.T) {
		want := map[string]string{}
		for _, r := range jsonLines(t, bin, "query", "stats", "--db", db, "--since", "0", "--limit", "0") {
			want[r["function"].(string)] = strconv.FormatFloat(r["calls"].(float64), 'f', 0, 64)
		}
		open(t, ctx, base, "/functions?since=0")
		rows := eval[[][]string](t, ctx, `[...document.querySelectorAll('#stats tbody tr')].map(r => [...r.cells].map(c => c.textContent))`)
		got := map[string]string{}
		for _, r := range rows {
			got[r[0]] = strings.ReplaceAll(r[1], ",", "")
		}
		if len(want) == 0 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("functions table\n got %v\nwant %v", got, want)
		}
		screenshot(t, ctx, dir, "functions")

		// Grouped by package, sorted by calls ascending, as the URL says.
		wantPkg := map[string]string{}
		for _, r := range jsonLines(t, bin, "query", "stats", "--db", db, "--since", "0", "--limit", "0", "--by", "package") {
			wantPkg[r["package"].(string)] = strconv.FormatFloat(r["calls"].(float64), 'f', 0, 64)
		}
		open(t, ctx, base, "/functions?since=0&by=package")
		rows = eval[[][]string](t, ctx, `[...document.querySelectorAll('#stats tbody tr')].map(r => [...r.cells].map(c => c.textContent))`)
		gotPkg := map[string]string{}
		for _, r := range rows {
			gotPkg[r[0]] = strings.ReplaceAll(r[1], ",", "")
		}
		if fmt.Sprint(gotPkg) != fmt.Sprint(wantPkg) {
			t.Errorf("by package\n got %v\nwant %v", gotPkg, wantPkg)
		}
		open(t, ctx, base, "/functions?since=0&sort=calls")
		calls := eval[[]int](t, ctx, `[...document.querySelectorAll('#stats tbody tr')].map(r => Number(r.cells[1].textContent.replaceAll(',', '')))`)
		for i := 1; i < len(calls); i++ {
			if calls[i] < calls[i-1] {
				t.Fatalf("sort=calls: %v not ascending", calls)
			}
		}
	})

	t.Run("function", func(t *testing.T) {
		open(t, ctx, base, "/function?since=0&name=main.hot")
		points := eval[[]string](t, ctx, `[...document.querySelectorAll('canvas.chart')].map(c => c.dataset.points)`)
		slow := eval[int](t, ctx, `document.querySelectorAll('#slowest tbody tr').length`)
		if len(points) != 3 || points[0] == "0" || points[0] == "" {
			t.Errorf("charts with %v points: want 3 charts, the call rate with points", points)
		}
		if slow == 0 {
			t.Error("no slowest calls listed")
		}
		screenshot(t, ctx, dir, "function")
	})

	t.Run("errors", func(t *testing.T) {
		want := jsonLines(t, bin, "query", "errors", "--db", db, "--since", "0", "--limit", "100")
		if len(want) == 0 {
			t.Fatal("query errors found none")
		}
		open(t, ctx, base, "/errors?since=0")
		text := eval[string](t, ctx, `document.querySelector('#errors').textContent`)
		for _, e := range want[:5] {
			if msg, _ := e["error"].(string); msg != "" && !strings.Contains(text, msg) {
				t.Errorf("error text %q not shown", msg)
			}
			var chain []string
			for _, c := range e["chain"].([]any) {
				chain = append(chain, c.(map[string]any)["function"].(string))
			}
			if line := "chain: " + strings.Join(append(chain, e["function"].(string)), " › "); len(chain) > 0 && !strings.Contains(text, line) {
				t.Errorf("chain %q not shown", line)
			}
		}
		screenshot(t, ctx, dir, "errors")
	})

	t.Run("call", func(t *testing.T) {
		roots := jsonLines(t, bin, "query", "calls", "--db", db, "--since", "0", "--func", "main.run", "--limit", "1")
		if len(roots) != 1 {
			t.Fatal("no main.run call")
		}
		id := strconv.FormatFloat(roots[0]["id"].(float64), 'f', 0, 64)
		tree := jsonLines(t, bin, "query", "tree", id, "--db", db, "--limit", "0")
		open(t, ctx, base, "/call?id="+id)
		rows := eval[[]struct {
			ID    string `json:"id"`
			Depth string `json:"depth"`
			Go    bool   `json:"go"`
		}](t, ctx, `[...document.querySelectorAll('#tree .row')].map(r => ({id: r.dataset.id, depth: r.dataset.depth, go: !!r.querySelector('.go')}))`)
		wf := eval[string](t, ctx, `document.querySelector('#waterfall').dataset.points`)
		ice := eval[string](t, ctx, `document.querySelector('#icicle').dataset.points`)
		if len(rows) != len(tree) {
			t.Fatalf("tree shows %d calls, query tree %d", len(rows), len(tree))
		}
		spawned := 0
		for i, r := range rows {
			w := tree[i]
			if r.ID != strconv.FormatFloat(w["id"].(float64), 'f', 0, 64) || r.Depth != strconv.FormatFloat(w["depth"].(float64), 'f', 0, 64) {
				t.Fatalf("row %d: id %s depth %s, query tree has %v", i, r.ID, r.Depth, w)
			}
			if r.Go {
				spawned++
				// A spawned goroutine's first call nests one level under its spawner.
				var parent map[string]any
				for j := i - 1; j >= 0; j-- {
					if tree[j]["id"] == w["parent_id"] {
						parent = tree[j]
						break
					}
				}
				if parent == nil || parent["depth"].(float64) != w["depth"].(float64)-1 || parent["goid"] == w["goid"] {
					t.Errorf("spawned call %v not nested under its spawner %v", w, parent)
				}
			}
		}
		if spawned < 5 {
			t.Errorf("%d calls marked as on a spawned goroutine, want at least spawn(5)'s 5", spawned)
		}
		if n, _ := strconv.Atoi(wf); n != len(tree) {
			t.Errorf("waterfall has %s bars, want %d", wf, len(tree))
		}
		if n, _ := strconv.Atoi(ice); n < 5 {
			t.Errorf("icicle has %s boxes", ice)
		}
		// Filtering keeps the matching calls and the path down to them.
		want := 0
		for _, w := range tree {
			if w["function"] == "main.worker" {
				want++
			}
		}
		shown := eval[[]string](t, ctx, `(() => { const f = document.querySelector('#treefilter'); f.value = 'main.worker'; f.dispatchEvent(new Event('input')); return [...document.querySelectorAll('#tree .row a')].map(a => a.textContent); })()`)
		got := 0
		for _, fn := range shown {
			if fn == "main.worker" {
				got++
			}
		}
		if got != want || len(shown) <= got || len(shown) >= len(tree) {
			t.Errorf("filter main.worker shows %v; want its %d calls and the calls above them only", shown, want)
		}
		// Collapsing the root hides everything below it.
		n := eval[int](t, ctx, `(() => { const f = document.querySelector('#treefilter'); f.value = ''; f.dispatchEvent(new Event('input')); document.querySelector('#tree .row .tog').click(); return document.querySelectorAll('#tree .row').length; })()`)
		if n != 1 {
			t.Errorf("collapsing the root leaves %d rows, want 1", n)
		}
		eval[bool](t, ctx, `(() => { document.querySelector('#tree .row .tog').click(); return true; })()`)
		screenshot(t, ctx, dir, "call")
	})

	t.Run("resources", func(t *testing.T) {
		samples := jsonLines(t, bin, "query", "resources", "--db", db, "--since", "0", "--limit", "0")
		open(t, ctx, base, "/resources?since=0")
		points := eval[[]string](t, ctx, `[...document.querySelectorAll('#charts canvas')].map(c => c.dataset.points)`)
		withCPU := 0
		for _, s := range samples {
			if s["rss_bytes"] != nil {
				withCPU++
			}
		}
		if len(points) != 7 || points[1] != strconv.Itoa(withCPU) || withCPU == 0 {
			t.Errorf("resource charts with %v points; want 7 charts, RSS with %d", points, withCPU)
		}
		screenshot(t, ctx, dir, "resources")
	})

	t.Run("store", func(t *testing.T) {
		parts := jsonLines(t, bin, "retention", "status", "--db", db)
		open(t, ctx, base, "/store")
		names := eval[[]string](t, ctx, `[...document.querySelectorAll('#partitions tbody tr')].map(r => r.cells[0].textContent + ' ' + r.cells[4].textContent)`)
		var want []string
		var calls int64
		for _, p := range parts {
			n := int64(p["rows"].(float64))
			want = append(want, p["partition"].(string)+" "+commas(n))
			if p["kind"] == "calls" {
				calls += n
			}
		}
		if fmt.Sprint(names) != fmt.Sprint(want) {
			t.Errorf("partitions\n got %v\nwant %v", names, want)
		}
		// The retention the agents ran with, as `retention status` says:
		// the last session's, ended.
		status := string(run(t, bin, "retention", "status", "--db", db))
		line := fmt.Sprintf("retention: 30h0m0s, archived to %s before the drop (session 4, ended", archive)
		if !strings.Contains(status, line) {
			t.Errorf("retention status has no line %q:\n%s", line, status)
		}
		window := eval[string](t, ctx, `document.getElementById('retention-window').textContent`)
		setting := eval[[]string](t, ctx, `[...document.querySelectorAll('#retention-settings tbody tr')].map(r => [...r.cells].map(c => c.textContent).join(' '))`)
		if window != "30h (last agent, ended)" || fmt.Sprint(setting) != fmt.Sprintf("[4 ended 30h %s]", archive) {
			t.Errorf("retention shown: %q, settings %q; want 30h of session 4, ended, archiving to %s", window, setting, archive)
		}
		// The rows the agent's writer counted are the calls stored.
		if all := jsonLines(t, bin, "query", "calls", "--db", db, "--since", "0", "--limit", "0"); int64(len(all)) != calls {
			t.Errorf("the calls partitions count %d rows, query calls returns %d", calls, len(all))
		}
		screenshot(t, ctx, dir, "store")
	})

	if p := cons.problems(); len(p) > 0 {
		t.Errorf("browser console: %s", strings.Join(p, "\n"))
	}
	t.Logf("screenshots in %s", dir)
}

// TestLive runs a program under `obs-agent run --ui` with the overview
// open and measures how fresh its Latest calls table is, without a
// reload: an observer in the page notes when each call first shows, and
// how long after that call returned (its start plus its duration, both
// from the machine's clock, as the browser's Date.now()). calltree hotcool
// makes a call every millisecond for about 5 s, so each redraw has a new
// newest call; the longest wait of any redraw's newest call must stay under
// the 2 s the issue allows.
func TestLive(t *testing.T) {
	testutil.RequireRoot(t)
	chromium(t)
	bin := agentBinary(t)
	calltree := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	dir := t.TempDir()
	db, ready := filepath.Join(dir, "obs.db"), filepath.Join(dir, "ready")
	cmd := exec.Command(bin, "run", "--ui", "127.0.0.1:0", "--db", db, "--ready-file", ready,
		"-f", "main.*", "--", calltree, "-wait", "hotcool", "0", "5000")
	stdin, _ := cmd.StdinPipe()
	stderr, _ := cmd.StderrPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	// The program prints its last line when its calls are done: redraws
	// after that have no newer call to show, so they don't measure.
	ended := make(chan int64, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "hotcool calls=") {
				ended <- time.Now().UnixMilli()
			}
		}
	}()
	sc := bufio.NewScanner(stderr)
	url := ""
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "obs-agent: UI at "); ok {
			url = u
			break
		}
	}
	if url == "" {
		t.Fatal("run --ui printed no URL")
	}
	go io.Copy(io.Discard, stderr)

	ctx, cons := browser(t)
	// The page is open (and listening) before the program makes its calls.
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	open(t, ctx, url[:strings.Index(url, "/?token=")], "/?since=0")
	// Wait for the probes (the agent writes the ready file when they are live).
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent never became ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	const newest = `(() => { const r = document.querySelector('#latest tbody tr'); return r ? r.cells[1].textContent : ''; })()`
	if f := eval[string](t, ctx, newest); f == "main.hot" {
		t.Fatal("main.hot shows before the program ran")
	}
	// Each redraw replaces the view: note, per redraw, its newest call and
	// how long after its end the page showed it.
	eval[bool](t, ctx, `(() => {
		window.seen = [];
		new MutationObserver(() => {
			const r = document.querySelector('#latest tbody tr');
			if (!r || r.cells[1].textContent !== 'main.hot') return;
			const last = window.seen[window.seen.length - 1];
			if (last && last.id === r.dataset.id) return;
			window.seen.push({ id: r.dataset.id, at: Date.now(), wait: Date.now() - Number(r.dataset.end), draw: drawMs });
		}).observe(document.getElementById('main'), { childList: true, subtree: true });
		return true;
	})()`)
	start := time.Now()
	fmt.Fprintln(stdin)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(tctx, chromedp.Poll[bool](`window.seen.length > 0`, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		t.Fatalf("no main.hot call showed in the open page: %v", err)
	}
	first := time.Since(start)
	// The program runs about 5 s; watch the redraws while it does.
	end := <-ended
	if err := cmd.Wait(); err != nil {
		t.Fatalf("obs-agent run: %v", err)
	}
	type redraw struct {
		ID   string  `json:"id"`
		At   float64 `json:"at"`   // Unix ms
		Wait float64 `json:"wait"` // ms after the call returned
		Draw float64 `json:"draw"` // the previous draw's time, ms
	}
	seen := eval[[]redraw](t, ctx, `window.seen`)
	var waits []float64
	for _, r := range seen {
		if int64(r.At) <= end {
			waits = append(waits, r.Wait)
		}
	}
	t.Logf("redraws (id, Unix ms, ms after the newest call returned, the previous draw's ms): %v", seen)
	if len(waits) < 3 {
		t.Fatalf("only %d redraws showed a new newest call over the run: %v", len(waits), waits)
	}
	slices.Sort(waits)
	t.Logf("the first main.hot call showed %v after the program was told to start; over %d redraws while it ran, the newest call showed %.0f ms (median) and at most %.0f ms after it returned (min %.0f ms)",
		first.Round(time.Millisecond), len(waits), waits[len(waits)/2], waits[len(waits)-1], waits[0])
	if waits[len(waits)-1] > 2000 {
		t.Errorf("a call took %.0f ms to show: want within 2 s", waits[len(waits)-1])
	}
	// Until the agent creates the store the API answers 503, which the
	// page shows and the browser logs.
	// Once the session is over the UI is gone with it, and the page's
	// event stream fails to reconnect.
	if p := cons.problems("status of 503", "ERR_CONNECTION_REFUSED"); len(p) > 0 {
		t.Errorf("browser console: %s", strings.Join(p, "\n"))
	}
}
