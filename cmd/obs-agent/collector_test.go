package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/otlp"
	"github.com/obs-agent/obs-agent/internal/query"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// The end-to-end OTLP tests run against a real OpenTelemetry Collector,
// built by the official builder from testdata/collector/builder-config.yaml
// (scripts/build-collector.sh; `make test` builds it and passes its path in
// OBS_OTELCOL). The collector receives on loopback with the core OTLP
// receiver and writes what it accepted with the file exporter, as OTLP JSON
// lines, which the tests read back and compare with the store.

// envCollector names the collector binary.
const envCollector = "OBS_OTELCOL"

// collectorBinary is the collector's path, or a skip saying how to get one.
func collectorBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(envCollector)
	if bin == "" {
		t.Skipf("%s is not set: build the test collector with `make collector` (scripts/build-collector.sh prints its path) "+
			"and set %s to it; `make test` does both", envCollector, envCollector)
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s=%s is not an executable collector (%v): rebuild it with scripts/build-collector.sh", envCollector, bin, err)
	}
	return bin
}

// collector is one running collector process.
type collector struct {
	cmd  *exec.Cmd
	out  string // the file exporter's output
	log  *testutil.SyncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed
}

// freePort returns a loopback port nothing listens on now. The collector
// binds it next; restarts reuse it, so the agent's endpoint stays valid.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// collectorConfig is the collector's configuration: the OTLP receiver on
// 127.0.0.1:port (HTTP only) and the file exporter writing to out. A
// rotation section makes the file exporter write each request straight to
// the file instead of through a buffer flushed every second, so a request
// the receiver acknowledged is on disk even if the collector is then
// killed; the size bound is never reached here.
func collectorConfig(port int, out string) string {
	return fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
exporters:
  file:
    path: %s
    rotation:
      max_megabytes: 1024
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
`, port, out)
}

// startCollector starts the collector on 127.0.0.1:port writing to out and
// returns once it logs that it is ready (its receiver listens by then).
func startCollector(t *testing.T, bin string, port int, out string) *collector {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "collector.yaml")
	if err := os.WriteFile(cfg, []byte(collectorConfig(port, out)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &collector{cmd: exec.Command(bin, "--config", cfg), out: out, log: &testutil.SyncBuffer{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	c.cmd.Stdout, c.cmd.Stderr = c.log, io.MultiWriter(c.log, pw)
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		found := false
		for sc.Scan() {
			if !found && strings.Contains(sc.Text(), "Everything is ready") {
				found = true
				ready <- true
			}
		}
		if !found {
			ready <- false
		}
	}()
	go func() {
		c.err = c.cmd.Wait()
		pw.Close()
		close(c.done)
	}()
	t.Cleanup(func() { c.kill() })
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("collector exited before it was ready:\n%s", c.log.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("collector not ready after a minute:\n%s", c.log.String())
	}
	return c
}

// stop shuts the collector down as a service manager would (SIGTERM): it
// finishes what it accepted and closes its output.
func (c *collector) stop(t *testing.T) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited: c.err says how
	select {
	case <-c.done:
		if c.err != nil {
			t.Fatalf("collector: %v\n%s", c.err, c.log.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("collector did not stop within a minute of SIGTERM:\n%s", c.log.String())
	}
}

// kill ends the collector at once (SIGKILL), as a crash would.
func (c *collector) kill() {
	select {
	case <-c.done:
	default:
		c.cmd.Process.Kill() //nolint:errcheck // it may have exited meanwhile
		<-c.done
	}
}

// otlpJSON is what the file exporter writes per request: one
// ExportTraceServiceRequest per line in the OTLP JSON encoding (ids in hex,
// 64-bit integers as strings, enums as numbers).
type otlpJSON struct {
	ResourceSpans []struct {
		Resource struct {
			Attributes []jsonKV `json:"attributes"`
		} `json:"resource"`
		ScopeSpans []struct {
			Scope struct {
				Name string `json:"name"`
			} `json:"scope"`
			Spans []jsonSpan `json:"spans"`
		} `json:"scopeSpans"`
	} `json:"resourceSpans"`
}

type jsonKV struct {
	Key   string `json:"key"`
	Value struct {
		StringValue *string         `json:"stringValue"`
		IntValue    json.RawMessage `json:"intValue"`
		BoolValue   *bool           `json:"boolValue"`
	} `json:"value"`
}

type jsonSpan struct {
	TraceID      string   `json:"traceId"`
	SpanID       string   `json:"spanId"`
	ParentSpanID string   `json:"parentSpanId"`
	Name         string   `json:"name"`
	Kind         int      `json:"kind"`
	Start        string   `json:"startTimeUnixNano"`
	End          string   `json:"endTimeUnixNano"`
	Attributes   []jsonKV `json:"attributes"`
	Status       struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"status"`
}

// receivedSpan is a span with its resource's attributes.
type receivedSpan struct {
	jsonSpan
	resource []jsonKV
}

func attrOf(kvs []jsonKV, key string) *jsonKV {
	for i := range kvs {
		if kvs[i].Key == key {
			return &kvs[i]
		}
	}
	return nil
}

func attrString(kvs []jsonKV, key string) string {
	if a := attrOf(kvs, key); a != nil && a.Value.StringValue != nil {
		return *a.Value.StringValue
	}
	return ""
}

// attrInt is an int attribute; ok is false when absent or not an int.
func attrInt(kvs []jsonKV, key string) (int64, bool) {
	a := attrOf(kvs, key)
	if a == nil || a.Value.IntValue == nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.Trim(string(a.Value.IntValue), `"`), 10, 64)
	return v, err == nil
}

func attrBool(kvs []jsonKV, key string) bool {
	a := attrOf(kvs, key)
	return a != nil && a.Value.BoolValue != nil && *a.Value.BoolValue
}

// readCollector parses every output file and returns the spans by call id,
// and how many spans arrived more than once (by span id).
func readCollector(t *testing.T, paths ...string) (map[uint64]receivedSpan, int) {
	t.Helper()
	byCall := map[uint64]receivedSpan{}
	seen := map[string]bool{}
	dups := 0
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue // that collector received nothing
		}
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range bytes.Split(raw, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var req otlpJSON
			if err := json.Unmarshal(line, &req); err != nil {
				t.Fatalf("%s line %d: %v", p, i+1, err)
			}
			for _, rs := range req.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					if ss.Scope.Name != otlp.ScopeName {
						t.Errorf("scope %q, want %q", ss.Scope.Name, otlp.ScopeName)
					}
					for _, sp := range ss.Spans {
						if seen[sp.SpanID] {
							dups++
							continue
						}
						seen[sp.SpanID] = true
						id, ok := attrInt(sp.Attributes, otlp.AttrCallID)
						if !ok {
							t.Fatalf("span %s (%s) has no %s", sp.SpanID, sp.Name, otlp.AttrCallID)
						}
						if prev, ok := byCall[uint64(id)]; ok {
							t.Errorf("call %d arrived as two spans, %s and %s", id, prev.SpanID, sp.SpanID)
						}
						byCall[uint64(id)] = receivedSpan{sp, rs.Resource.Attributes}
					}
				}
			}
		}
	}
	return byCall, dups
}

// storeCalls reads every call and the one session of a store.
func storeCalls(t *testing.T, db string) (*store.Store, []record.Call, record.Session) {
	t.Helper()
	s, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	calls, err := s.Calls(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := s.Sessions(context.Background())
	if err != nil || len(sessions) != 1 {
		t.Fatalf("sessions %+v, %v; want one", sessions, err)
	}
	return s, calls, sessions[0]
}

// checkSpan compares one received span with the call it stands for.
func checkSpan(t *testing.T, c record.Call, sp receivedSpan, spans map[uint64]receivedSpan, sess record.Session) {
	t.Helper()
	where := fmt.Sprintf("call %d (%s)", c.ID, c.Function)
	if sp.Name != c.Function || attrString(sp.Attributes, otlp.AttrFunctionName) != c.Function {
		t.Errorf("%s: span name %q, %s %q", where, sp.Name, otlp.AttrFunctionName, attrString(sp.Attributes, otlp.AttrFunctionName))
	}
	if sp.Kind != 1 {
		t.Errorf("%s: kind %d, want 1 (INTERNAL)", where, sp.Kind)
	}
	if g, _ := attrInt(sp.Attributes, otlp.AttrThreadID); g != int64(c.GoID) {
		t.Errorf("%s: %s %d, want goroutine %d", where, otlp.AttrThreadID, g, c.GoID)
	}
	if sp.Start != strconv.FormatInt(c.Start, 10) || sp.End != strconv.FormatInt(c.Start+c.Duration, 10) {
		t.Errorf("%s: span [%s, %s], call starts %d and lasts %d ns", where, sp.Start, sp.End, c.Start, c.Duration)
	}
	if c.ParentID == 0 {
		if sp.ParentSpanID != "" {
			t.Errorf("%s: a root, but its span has parent %s", where, sp.ParentSpanID)
		}
	} else if p, ok := spans[c.ParentID]; !ok {
		t.Errorf("%s: its parent call %d did not arrive", where, c.ParentID)
	} else if sp.ParentSpanID != p.SpanID {
		t.Errorf("%s: parent span %s, want %s (call %d, %s)", where, sp.ParentSpanID, p.SpanID, c.ParentID, p.Name)
	} else if sp.TraceID != p.TraceID {
		t.Errorf("%s: trace %s, its parent's %s", where, sp.TraceID, p.TraceID)
	}
	switch c.Status {
	case record.StatusError, record.StatusPanic:
		want := c.ErrorType
		if want == "" {
			want = "_OTHER"
		}
		if sp.Status.Code != 2 || sp.Status.Message != c.Error || attrString(sp.Attributes, otlp.AttrErrorType) != want {
			t.Errorf("%s: status %+v, %s %q; want ERROR %q, %q", where, sp.Status, otlp.AttrErrorType,
				attrString(sp.Attributes, otlp.AttrErrorType), c.Error, want)
		}
		if attrBool(sp.Attributes, otlp.AttrPanic) != (c.Status == record.StatusPanic) {
			t.Errorf("%s: status %v, %s %v", where, c.Status, otlp.AttrPanic, attrBool(sp.Attributes, otlp.AttrPanic))
		}
	default:
		if sp.Status.Code != 0 || sp.Status.Message != "" {
			t.Errorf("%s: status %v, span status %+v; want unset", where, c.Status, sp.Status)
		}
		if attrBool(sp.Attributes, otlp.AttrUnfinished) != (c.Status == record.StatusUnfinished) {
			t.Errorf("%s: status %v, %s %v", where, c.Status, otlp.AttrUnfinished, attrBool(sp.Attributes, otlp.AttrUnfinished))
		}
	}
	if pid, _ := attrInt(sp.resource, otlp.AttrProcessPID); pid != int64(sess.PID) {
		t.Errorf("%s: %s %d, want %d", where, otlp.AttrProcessPID, pid, sess.PID)
	}
	exe := filepath.Base(sess.Binary)
	if attrString(sp.resource, otlp.AttrServiceName) != exe || attrString(sp.resource, otlp.AttrExecutableName) != exe {
		t.Errorf("%s: %s %q, %s %q; want %q", where, otlp.AttrServiceName, attrString(sp.resource, otlp.AttrServiceName),
			otlp.AttrExecutableName, attrString(sp.resource, otlp.AttrExecutableName), exe)
	}
}

// checkTrees checks that each trace the collector received is exactly the
// store's tree under one root call, spawned goroutines included, and that
// parents on other goroutines are among them.
func checkTrees(t *testing.T, s *store.Store, calls []record.Call, spans map[uint64]receivedSpan, minCross int) {
	t.Helper()
	traces := map[string]map[uint64]bool{}
	for id, sp := range spans {
		if traces[sp.TraceID] == nil {
			traces[sp.TraceID] = map[uint64]bool{}
		}
		traces[sp.TraceID][id] = true
	}
	q := query.New(s)
	roots, cross := 0, 0
	for _, c := range calls {
		if p, ok := spans[c.ParentID]; ok && c.ParentID != 0 {
			if g, _ := attrInt(p.Attributes, otlp.AttrThreadID); g != int64(c.GoID) {
				cross++
			}
		}
		if c.ParentID != 0 {
			continue
		}
		roots++
		tree, err := q.Tree(context.Background(), c.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		tr := traces[spans[c.ID].TraceID]
		if len(tr) != len(tree.Calls) {
			t.Errorf("root %d (%s): its trace has %d spans, the store's tree %d calls", c.ID, c.Function, len(tr), len(tree.Calls))
		}
		for _, tc := range tree.Calls {
			if !tr[tc.ID] {
				t.Errorf("call %d (%s) of root %d's tree is not in its trace", tc.ID, tc.Function, c.ID)
			}
		}
	}
	if roots != len(traces) {
		t.Errorf("the store has %d roots, the collector %d traces", roots, len(traces))
	}
	if cross < minCross {
		t.Errorf("%d spans have a parent on another goroutine; want at least %d", cross, minCross)
	}
}

// checkAllArrived checks that every call of the store arrived exactly once
// (dups counts spans received twice), as a span that matches it, and that
// nothing arrived that the store does not hold.
func checkAllArrived(t *testing.T, db string, spans map[uint64]receivedSpan, dups int) {
	t.Helper()
	s, calls, sess := storeCalls(t, db)
	var errs, panics int
	for _, c := range calls {
		sp, ok := spans[c.ID]
		if !ok {
			t.Errorf("call %d (%s, %v) did not arrive", c.ID, c.Function, c.Status)
			continue
		}
		checkSpan(t, c, sp, spans, sess)
		switch c.Status {
		case record.StatusError:
			errs++
		case record.StatusPanic:
			panics++
		}
	}
	// calltree's tree: ~240 calls, one error (recovered) and one panic.
	if len(calls) < 200 || errs == 0 || panics == 0 {
		t.Fatalf("store holds %d calls, %d errors, %d panics: calltree makes more", len(calls), errs, panics)
	}
	if len(spans) != len(calls) || dups != 0 {
		t.Errorf("the collector received %d distinct spans (%d more than once) for %d stored calls", len(spans), dups, len(calls))
	}
	// calltree spawns 6 goroutines under traced calls (spawn ×5, relay).
	checkTrees(t, s, calls, spans, 6)
}

// TestCollectorExport traces calltree into a store, sends the store with
// `obs-agent export otlp` to a real collector on loopback, and compares
// what the collector wrote with the store: every call once, as a span with
// its name, parent (across goroutines too), trace, status, error text and
// attributes; each trace exactly the store's tree under its root. Sending
// again sends nothing (the progress file), and a fresh export of the same
// store gives the same span ids (deterministic ids).
func TestCollectorExport(t *testing.T) {
	testutil.RequireRoot(t)
	col := collectorBinary(t)
	calltree := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	dir := t.TempDir()
	db := filepath.Join(dir, "obs.db")
	if out, _, err := cli(t, "run", "-f", "main.*", "-x", "main.hop*", "--db", db, "--", calltree); err != nil || !strings.Contains(out, "result 419") {
		t.Fatalf("run: out %q, err %v", out, err)
	}

	port := freePort(t)
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	first := filepath.Join(dir, "first.json")
	c := startCollector(t, col, port, first)
	start := time.Now()
	out, _, err := cli(t, "export", "otlp", "--db", db, "--since", "0", "--endpoint", endpoint, "--batch", "64")
	if err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	took := time.Since(start)
	// Nothing left to send: the progress file says all went.
	again, _, err := cli(t, "export", "otlp", "--db", db, "--since", "0", "--endpoint", endpoint)
	if err != nil || !strings.HasPrefix(again, "exported 0 spans") {
		t.Errorf("second export: %q, %v; want 0 spans", again, err)
	}
	c.stop(t)
	spans, dups := readCollector(t, first)
	t.Logf("%s; %d spans in %v", strings.TrimSpace(out), len(spans), took)
	checkAllArrived(t, db, spans, dups)

	// A fresh export (no progress file) to a second collector: the same ids.
	checkSameIDs(t, spans, "first export", exportToCollector(t, col, port, db, filepath.Join(dir, "fresh.state")), "re-export")
}

// exportToCollector sends the whole store with `obs-agent export otlp`
// (progress in state) to a new collector on port and returns what it
// received.
func exportToCollector(t *testing.T, col string, port int, db, state string) map[uint64]receivedSpan {
	t.Helper()
	out := filepath.Join(filepath.Dir(state), filepath.Base(state)+".json")
	c := startCollector(t, col, port, out)
	if _, _, err := cli(t, "export", "otlp", "--db", db, "--since", "0", "--endpoint", fmt.Sprintf("http://127.0.0.1:%d", port),
		"--state", state); err != nil {
		t.Fatal(err)
	}
	c.stop(t)
	spans, _ := readCollector(t, out)
	return spans
}

// checkSameIDs checks that two sendings of the same calls gave each call
// the same trace, span and parent span ids.
func checkSameIDs(t *testing.T, a map[uint64]receivedSpan, aName string, b map[uint64]receivedSpan, bName string) {
	t.Helper()
	if len(a) != len(b) {
		t.Errorf("%s: %d spans, %s %d", bName, len(b), aName, len(a))
	}
	for id, x := range a {
		if y := b[id]; x.SpanID != y.SpanID || x.TraceID != y.TraceID || x.ParentSpanID != y.ParentSpanID {
			t.Errorf("call %d: %s as span %s/%s parent %s, %s as %s/%s parent %s",
				id, aName, x.TraceID, x.SpanID, x.ParentSpanID, bName, y.TraceID, y.SpanID, y.ParentSpanID)
		}
	}
}
