package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"

	"github.com/obs-agent/obs-agent/internal/otlp"
	"github.com/obs-agent/obs-agent/internal/otlp/otlptest"
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

// readCollector reads what the collectors wrote (otlptest.Spans.ReadJSON)
// and checks that every span came in obs-agent's instrumentation scope.
func readCollector(t *testing.T, paths ...string) *otlptest.Spans {
	t.Helper()
	spans := otlptest.NewSpans()
	for _, p := range paths {
		spans.ReadJSON(t, p)
	}
	for sc := range spans.Scopes {
		if sc != otlp.ScopeName {
			t.Errorf("scope %q, want %q", sc, otlp.ScopeName)
		}
	}
	return spans
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

// checkAllArrived checks that every call of the store arrived exactly once,
// as a span that matches it (otlptest.Spans.Check), with the process as
// its resource, that nothing arrived that the store does not hold, and
// that each trace is exactly the store's tree under one root call. It
// returns the spans by call id.
func checkAllArrived(t *testing.T, db string, spans *otlptest.Spans) map[uint64]*tracepb.Span {
	t.Helper()
	s, calls, sess := storeCalls(t, db)
	var errs, panics int
	for _, c := range calls {
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
	got := spans.Check(t, calls, false)
	spans.CheckResources(t, filepath.Base(sess.Binary), int64(sess.PID))
	// calltree spawns 6 goroutines under traced calls (spawn ×5, relay).
	otlptest.CheckTrees(t, calls, got, query.New(s).Tree, 6)
	return got
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
	spans := readCollector(t, first)
	t.Logf("%s; %d spans in %v", strings.TrimSpace(out), len(spans.ByID), took)
	byCall := checkAllArrived(t, db, spans)

	// A fresh export (no progress file) to a second collector: the same ids.
	checkSameIDs(t, byCall, "first export", exportToCollector(t, col, port, db, filepath.Join(dir, "fresh.state")), "re-export")
}

// exportToCollector sends the whole store with `obs-agent export otlp`
// (progress in state) to a new collector on port and returns what it
// received.
func exportToCollector(t *testing.T, col string, port int, db, state string) map[uint64]*tracepb.Span {
	t.Helper()
	out := filepath.Join(filepath.Dir(state), filepath.Base(state)+".json")
	c := startCollector(t, col, port, out)
	if _, _, err := cli(t, "export", "otlp", "--db", db, "--since", "0", "--endpoint", fmt.Sprintf("http://127.0.0.1:%d", port),
		"--state", state); err != nil {
		t.Fatal(err)
	}
	c.stop(t)
	return otlptest.ByCall(t, readCollector(t, out).ByID)
}

// checkSameIDs checks that two sendings of the same calls gave each call
// the same trace, span and parent span ids.
func checkSameIDs(t *testing.T, a map[uint64]*tracepb.Span, aName string, b map[uint64]*tracepb.Span, bName string) {
	t.Helper()
	if len(a) != len(b) {
		t.Errorf("%s: %d spans, %s %d", bName, len(b), aName, len(a))
	}
	for id, x := range a {
		y := b[id]
		if !bytes.Equal(x.SpanId, y.GetSpanId()) || !bytes.Equal(x.TraceId, y.GetTraceId()) || !bytes.Equal(x.ParentSpanId, y.GetParentSpanId()) {
			t.Errorf("call %d: %s as span %x/%x parent %x, %s as %x/%x parent %x",
				id, aName, x.TraceId, x.SpanId, x.ParentSpanId, bName, y.GetTraceId(), y.GetSpanId(), y.GetParentSpanId())
		}
	}
}
