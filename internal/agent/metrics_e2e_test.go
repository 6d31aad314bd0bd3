package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// scrape reads /metrics and parses it with Prometheus' own text parser. It
// returns an error rather than failing the test: OnReady calls it from the
// session's goroutine.
func scrape(addr string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET /metrics: %s\n%s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return fams, nil
}

// series indexes a family's samples by their labels, "k=v,k=v" sorted by
// label name (as the parser returns them).
func series(fams map[string]*dto.MetricFamily, name string) map[string]*dto.Metric {
	out := map[string]*dto.Metric{}
	f := fams[name]
	if f == nil {
		return out
	}
	for _, m := range f.Metric {
		var kv []string
		for _, l := range m.Label {
			kv = append(kv, l.GetName()+"="+l.GetValue())
		}
		out[strings.Join(kv, ",")] = m
	}
	return out
}

// funcCalls is calls_total per function and status.
func funcCalls(fams map[string]*dto.MetricFamily) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for _, m := range fams["obs_agent_calls_total"].GetMetric() {
		var fn, st string
		for _, l := range m.Label {
			switch l.GetName() {
			case "function":
				fn = l.GetValue()
			case "status":
				st = l.GetValue()
			}
		}
		if out[fn] == nil {
			out[fn] = map[string]uint64{}
		}
		out[fn][st] = uint64(m.GetCounter().GetValue())
	}
	return out
}

// TestMetricsMatchStats traces errs with --metrics-listen and scrapes
// /metrics twice: when the probes are live and nothing ran (every selected
// function is there, at zero), and after the last traced call while the
// program holds and the session still runs. The second scrape must equal,
// function by function, what query stats reads from the store once the
// session has ended: calls by status, lost records, and the duration
// histogram bucket by bucket. With ok calls sampled at 50%, the counts are
// still every call made.
func TestMetricsMatchStats(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "errs"})
	for _, tc := range []struct {
		name    string
		args    []string
		include string
		want    []string // statuses that must occur
	}{
		{"errors sampled", []string{"errors", "5000"}, "main.*@0.5", []string{"ok", "error"}},
		{"recover", []string{"recover"}, "main.*", []string{"ok", "error", "panic"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			addr := ln.Addr().String()
			opts := testOptions(t)
			opts.Include = []string{tc.include}
			// main.main and its deferred hold are open during the second
			// scrape; every other function is done by then.
			opts.Exclude = []string{"main.main*"}
			opts.Metrics = ln
			// The agent runs in this test process and counts all of its
			// Go memory as the agent's base. In one CI run the second
			// subtest's agent found 142.6 MiB (19.9 MiB four seconds
			// earlier, in the first) and refused to start under the
			// default 160 MiB. What held that memory was not found (run
			// here, a heap profile at that point shows under 1 MiB live,
			// and the base 19-25 MiB); memory is not what this test is
			// about, so its limit leaves room for the test process.
			opts.MemoryLimit = 256 << 20
			var first map[string]*dto.MetricFamily
			var firstErr error
			// Scrapes while the program runs, until it holds: each kept
			// as its per-function counts only. The whole parsed scrapes,
			// up to 500 of them, were over 100 MiB of this process's
			// heap, which the next subtest's agent, running in this
			// process, counted as its own Go base memory.
			var mid []map[string]map[string]uint64
			stopMid, midDone := make(chan struct{}), make(chan struct{})
			opts.OnReady = func(int) {
				first, firstErr = scrape(addr)
				go func() {
					defer close(midDone)
					for len(mid) < 500 {
						select {
						case <-stopMid:
							return
						default:
						}
						if fams, err := scrape(addr); err == nil {
							mid = append(mid, funcCalls(fams))
						}
					}
				}()
			}

			stdinR, stdinW := io.Pipe()
			stdoutR, stdoutW := io.Pipe()
			lines := make(chan string, 16)
			go func() {
				sc := bufio.NewScanner(stdoutR)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			type ran struct {
				res *Result
				err error
			}
			done := make(chan ran, 1)
			go func() {
				res, err := Run(context.Background(), append([]string{bin, "-hold"}, tc.args...), stdinR, stdoutW, io.Discard, opts)
				stdoutW.Close()
				done <- ran{res, err}
			}()
			var held map[string]*dto.MetricFamily
			timeout := time.After(2 * time.Minute) // a bound on a hung target, not a synchronisation
		wait:
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatal("the program ended without holding")
					}
					if l == "holding" {
						close(stopMid)
						<-midDone
						held, err = scrape(addr)
						// Closed, not only written: exec copies stdin
						// until EOF and waits for that copy.
						stdinW.Write([]byte("go\n"))
						stdinW.Close()
						if err != nil {
							t.Fatal(err)
						}
						break wait
					}
				case r := <-done:
					t.Fatalf("session ended before the program held: %v", r.err)
				case <-timeout:
					t.Fatal("the program did not hold within 2 minutes")
				}
			}
			for range lines {
			}
			r := <-done
			if r.err != nil || firstErr != nil {
				t.Fatal(r.err, firstErr)
			}

			checkFirstScrape(t, first, r.res)
			checkMidScrapes(t, mid, held)
			rows := storeStats(t, opts.DB, store.Filter{})
			checkAgainstStats(t, held, rows, tc.want)
			checkHealth(t, held, r.res, bin)
			if tc.include != "main.*" {
				var sampled uint64
				for _, m := range series(held, "obs_agent_calls_lost_total") {
					if labelValue(m, "reason") == "sampled" {
						sampled += uint64(m.GetCounter().GetValue())
					}
				}
				if sampled == 0 || sampled != r.res.Sampled {
					t.Errorf("sampled ok calls: /metrics %d, session %d; want equal and > 0", sampled, r.res.Sampled)
				}
			}
			var total uint64
			for _, st := range funcCalls(held) {
				for _, n := range st {
					total += n
				}
			}
			if total != r.res.Calls || total == 0 {
				t.Errorf("/metrics counts %d calls, the session %d", total, r.res.Calls)
			}
		})
	}
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// storeStats is what query stats reads, per function, of the records f
// selects.
func storeStats(t *testing.T, db string, f store.Filter) map[string]record.FuncStats {
	t.Helper()
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := st.Stats(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]record.FuncStats{}
	for _, r := range rows {
		sum := out[r.Function.Name]
		sum.Add(&r.FuncStats)
		out[r.Function.Name] = sum
	}
	return out
}

// checkFirstScrape: before the program ran, every traced function is
// listed, with no call.
func checkFirstScrape(t *testing.T, fams map[string]*dto.MetricFamily, res *Result) {
	t.Helper()
	calls := funcCalls(fams)
	if len(calls) != res.Functions {
		t.Errorf("first scrape lists %d functions, the session traced %d", len(calls), res.Functions)
	}
	for fn, st := range calls {
		for s, n := range st {
			if n != 0 {
				t.Errorf("first scrape: %s %s = %d before the program ran", fn, s, n)
			}
		}
	}
}

// checkMidScrapes: scrapes taken while the program ran never count more
// calls (or errors) than a later scrape, per function.
func checkMidScrapes(t *testing.T, mid []map[string]map[string]uint64, held map[string]*dto.MetricFamily) {
	t.Helper()
	prev := map[string]map[string]uint64{}
	for _, cur := range append(mid, funcCalls(held)) {
		for fn, st := range cur {
			var n, pn uint64
			for _, c := range st {
				n += c
			}
			for _, c := range prev[fn] {
				pn += c
			}
			if n < pn || st["error"] < prev[fn]["error"] {
				t.Errorf("%s went back: %v after %v", fn, st, prev[fn])
			}
		}
		prev = cur
	}
	t.Logf("%d scrapes while the program ran", len(mid))
}

// checkAgainstStats compares the held scrape with the store's aggregates
// for every function.
func checkAgainstStats(t *testing.T, fams map[string]*dto.MetricFamily, rows map[string]record.FuncStats, want []string) {
	t.Helper()
	calls := funcCalls(fams)
	hists := map[string]*dto.Histogram{}
	for _, m := range fams["obs_agent_call_duration_seconds"].GetMetric() {
		hists[labelValue(m, "function")] = m.GetHistogram()
	}
	lost := map[string]map[string]uint64{}
	for _, m := range fams["obs_agent_calls_lost_total"].GetMetric() {
		fn := labelValue(m, "function")
		if lost[fn] == nil {
			lost[fn] = map[string]uint64{}
		}
		lost[fn][labelValue(m, "reason")] = uint64(m.GetCounter().GetValue())
	}
	recorded := map[string]uint64{}
	for _, m := range fams["obs_agent_calls_recorded_total"].GetMetric() {
		recorded[labelValue(m, "function")] = uint64(m.GetCounter().GetValue())
	}
	seen := map[string]uint64{}
	for fn, st := range calls {
		var n uint64
		for s, c := range st {
			n += c
			seen[s] += c
		}
		row, ok := rows[fn]
		if !ok {
			if n != 0 {
				t.Errorf("%s: /metrics counts %d calls, query stats has no row", fn, n)
			}
			continue
		}
		if n != row.Calls || st["error"] != row.Errors || st["panic"] != row.Panics || st["unfinished"] != 0 {
			t.Errorf("%s: /metrics %v (sum %d); query stats calls %d errors %d panics %d", fn, st, n, row.Calls, row.Errors, row.Panics)
		}
		if l := lost[fn]; l["sampled"] != row.Sampled || l["dropped"] != row.Dropped {
			t.Errorf("%s: lost /metrics %v; query stats sampled %d dropped %d", fn, l, row.Sampled, row.Dropped)
		}
		// Records still on their way to the store at the scrape can only
		// make /metrics lower.
		if recorded[fn] > row.Recorded {
			t.Errorf("%s: /metrics recorded %d > query stats %d", fn, recorded[fn], row.Recorded)
		}
		h := hists[fn]
		if h.GetSampleCount() != row.Calls {
			t.Errorf("%s: histogram count %d, calls %d", fn, h.GetSampleCount(), row.Calls)
		}
		if math.Abs(h.GetSampleSum()-float64(row.TotalNs)/1e9) > 1e-9*float64(row.TotalNs)/1e9+1e-12 {
			t.Errorf("%s: histogram sum %g s, query stats total %d ns", fn, h.GetSampleSum(), row.TotalNs)
		}
		checkBuckets(t, fn, h, &row.Hist)
	}
	for fn, row := range rows {
		if _, ok := calls[fn]; !ok {
			t.Errorf("%s: query stats has %d calls, /metrics has no series", fn, row.Calls)
		}
	}
	for _, s := range want {
		if seen[s] == 0 {
			t.Errorf("no call with status %s: the test does not exercise it (seen %v)", s, seen)
		}
	}
}

// checkBuckets: each Prometheus bucket counts the calls of the log2
// buckets up to its bound, exactly, and the bounds are 2^i-1 ns.
func checkBuckets(t *testing.T, fn string, h *dto.Histogram, hist *[record.HistBuckets]uint64) {
	t.Helper()
	if len(h.GetBucket()) == 0 {
		t.Errorf("%s: histogram without buckets", fn)
	}
	for _, b := range h.GetBucket() {
		ub := b.GetUpperBound()
		var want uint64
		matched := false
		for i, n := range hist {
			upper := float64(uint64(1)<<uint(i)-1) / 1e9
			if upper <= ub*(1+1e-12) {
				want += n
			}
			if math.Abs(upper-ub) <= ub*1e-12 {
				matched = true
			}
		}
		if !matched {
			t.Errorf("%s: bucket bound %g s is not 2^i-1 ns", fn, ub)
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("%s: bucket le=%g has %d calls, the kernel histogram %d", fn, ub, b.GetCumulativeCount(), want)
		}
	}
}

// checkHealth checks the agent's own metrics and that no label could
// carry a pid or a goroutine id.
func checkHealth(t *testing.T, fams map[string]*dto.MetricFamily, res *Result, bin string) {
	t.Helper()
	for name := range fams {
		if !strings.HasPrefix(name, "obs_agent_") {
			t.Errorf("metric %s lacks the obs_agent_ prefix", name)
		}
	}
	noPIDLabel(t, fams)
	gauge := func(name string) float64 { return fams[name].GetMetric()[0].GetGauge().GetValue() }
	if got := gauge("obs_agent_probe_sites"); got != float64(res.Sites) || got == 0 {
		t.Errorf("probe_sites %g, session %d", got, res.Sites)
	}
	if got := gauge("obs_agent_probed_functions"); got != float64(res.Functions) {
		t.Errorf("probed_functions %g, session %d", got, res.Functions)
	}
	info := series(fams, "obs_agent_session_info")
	if len(info) != 1 {
		t.Fatalf("session_info has %d series, want 1", len(info))
	}
	for _, m := range info {
		if labelValue(m, "binary") != bin || labelValue(m, "build_id") == "" || !strings.HasPrefix(labelValue(m, "go_version"), "go1.") {
			t.Errorf("session_info labels %v", m.Label)
		}
	}
	for _, m := range fams["obs_agent_calls_total"].GetMetric() {
		if labelValue(m, "binary") != bin {
			t.Errorf("calls_total series %v: want binary %s", m.Label, bin)
		}
	}
	for _, want := range []string{"lane=error", "lane=ok"} {
		if series(fams, "obs_agent_ring_dropped_total")[want] == nil {
			t.Errorf("ring_dropped_total has no %s series", want)
		}
	}
	for _, want := range []string{"lane=error,sink=store", "lane=ok,sink=store", "lane=error_journal,sink=store"} {
		if series(fams, "obs_agent_queue_depth_records")[want] == nil {
			t.Errorf("queue_depth_records has no %s series", want)
		}
	}
	if series(fams, "obs_agent_sink_write_duration_seconds")["sink=store"] == nil {
		t.Error("no store write duration histogram")
	}
	for _, name := range []string{"obs_agent_breaker_pauses_total", "obs_agent_error_records_lost_total", "obs_agent_tracer_anomalies_total"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}
