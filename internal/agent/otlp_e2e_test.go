package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
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

// traceCalltree runs the bundled calltree program under the agent with
// opts (DB and patterns filled in) and returns the result, the binary and
// the store's calls, after checking the program behaved and the tree holds
// an error and a panic.
func traceCalltree(t *testing.T, opts Options) (*Result, string, *store.Store, []record.Call) {
	t.Helper()
	testutil.RequireRoot(t)
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	opts.DB = filepath.Join(t.TempDir(), "obs.db")
	opts.Include, opts.Exclude, opts.SampleRate = []string{"main.*"}, []string{"main.hop*"}, 1
	res := runCalltree(t, bin, opts)
	s, err := store.Open(opts.DB, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	calls, err := s.Calls(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < 200 {
		t.Fatalf("store holds %d calls; the tree has more", len(calls))
	}
	var errs, panics int
	for _, c := range calls {
		switch c.Status {
		case record.StatusError:
			errs++
		case record.StatusPanic:
			panics++
		}
	}
	if errs == 0 || panics == 0 {
		t.Fatalf("the tree should hold an error and a panic: %d errors, %d panics", errs, panics)
	}
	return res, bin, s, calls
}

// checkCalltreeSpans checks what rcv received against the store: every
// call once as a span with its name, goroutine, parent (across goroutines
// too), trace, status and error text; one trace per root whose spans are
// exactly the store's tree under that root; the process as the resource.
func checkCalltreeSpans(t *testing.T, rcv *otlptest.Receiver, s *store.Store, calls []record.Call, bin string, pid int) map[uint64]*tracepb.Span {
	t.Helper()
	got := rcv.Check(t, calls, false)
	// calltree spawns 6 goroutines under traced calls (spawn ×5, relay).
	otlptest.CheckTrees(t, calls, got, query.New(s).Tree, 6)
	rcv.CheckResources(t, filepath.Base(bin), int64(pid))
	return got
}

// exportStore runs `export otlp` on s to url.
func exportStore(t *testing.T, s *store.Store, url, state string) (otlp.Report, error) {
	t.Helper()
	e, err := otlp.New(otlp.Config{Endpoint: url, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxElapsed: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	x := &otlp.StoreExport{Store: s, Sender: e, StatePath: state, BatchSize: 32}
	return x.Run(context.Background())
}

// TestExportTracedCalltree traces the bundled calltree program for real,
// exports its store (`export otlp`), and checks what arrived against the
// store (checkCalltreeSpans).
func TestExportTracedCalltree(t *testing.T) {
	res, bin, s, calls := traceCalltree(t, Options{})
	rcv := otlptest.NewReceiver(t)
	rep, err := exportStore(t, s, rcv.URL(), filepath.Join(t.TempDir(), "otlp-state"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Spans != int64(len(calls)) {
		t.Errorf("exported %d spans for %d calls", rep.Spans, len(calls))
	}
	checkCalltreeSpans(t, rcv, s, calls, bin, res.PID)
}

// liveOTLP is the OTLP sink's options for a test receiver: short
// back-offs, and a hold long enough that a loaded machine never releases
// a span before its root's record arrives.
func liveOTLP(url string) *OTLPOptions {
	return &OTLPOptions{
		Exporter: otlp.Config{Endpoint: url, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxElapsed: 200 * time.Millisecond},
		Hold:     time.Minute,
		Version:  "test",
	}
}

// TestLiveOTLPCalltree traces calltree with the OTLP sink on: every call
// the store holds arrived once, while tracing, as a span with the right
// parent (across goroutines too), trace, status and error text; the sink's
// ledger says so; and exporting the store afterwards gives exactly the
// same spans (same span, trace and parent ids), so a re-export is
// idempotent.
func TestLiveOTLPCalltree(t *testing.T) {
	live := otlptest.NewReceiver(t)
	res, bin, s, calls := traceCalltree(t, Options{OTLP: liveOTLP(live.URL())})
	got := checkCalltreeSpans(t, live, s, calls, bin, res.PID)

	if len(res.Sinks) != 2 || res.Sinks[0].Sink != "store" || res.Sinks[1].Sink != "otlp" {
		t.Fatalf("sinks %+v, want store then otlp", res.Sinks)
	}
	written, dropped, errLost := res.Sinks[1].Totals()
	if written != uint64(len(calls)) || dropped != 0 || errLost != 0 {
		t.Errorf("otlp ledger: written %d, dropped %d, errors lost %d; want %d, 0, 0", written, dropped, errLost, len(calls))
	}
	want := fmt.Sprintf("otlp sink: sent %d records, lost 0", len(calls))
	if !strings.Contains(res.Summary(), want) {
		t.Errorf("exit line %q does not say %q", res.Summary(), want)
	}

	again := otlptest.NewReceiver(t)
	if _, err := exportStore(t, s, again.URL(), filepath.Join(t.TempDir(), "otlp-state")); err != nil {
		t.Fatal(err)
	}
	exported := again.Check(t, calls, false)
	for id, sp := range got {
		e := exported[id]
		if e == nil || !bytes.Equal(e.SpanId, sp.SpanId) || !bytes.Equal(e.TraceId, sp.TraceId) || !bytes.Equal(e.ParentSpanId, sp.ParentSpanId) {
			t.Errorf("call %d: live span %x/%x (parent %x), exported %v", id, sp.TraceId, sp.SpanId, sp.ParentSpanId, e)
		}
	}
}

// logEvents is a slog handler that reports each message on a channel
// (without blocking: a test waits for the ones it knows will come).
type logEvents struct {
	mu   sync.Mutex
	subs []logSub
}

type logSub struct {
	substr string
	ch     chan struct{}
}

// on returns a channel closed when a message containing substr is logged.
func (l *logEvents) on(substr string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := make(chan struct{})
	l.subs = append(l.subs, logSub{substr, ch})
	return ch
}

func (l *logEvents) Enabled(context.Context, slog.Level) bool { return true }
func (l *logEvents) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := l.subs[:0]
	for _, s := range l.subs {
		if strings.Contains(r.Message, s.substr) {
			close(s.ch)
			continue
		}
		kept = append(kept, s)
	}
	l.subs = kept
	return nil
}
func (l *logEvents) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logEvents) WithGroup(string) slog.Handler      { return l }

// TestLiveOTLPOutage: the collector goes down while the program runs and
// comes back before it ends. No error span is lost: every error the store
// holds arrived, once. Ok spans were dropped while it was down, and the
// ledger and the exit line count every one not sent: spans received +
// dropped = records made. The store, a separate sink, lost nothing.
func TestLiveOTLPOutage(t *testing.T) {
	testutil.RequireRoot(t)
	load := testutil.BuildProgram(t, testutil.Build{Program: "load"})
	rcv := otlptest.NewReceiver(t)
	events := &logEvents{}
	failing := events.on("otlp endpoint " + rcv.URL() + " is unreachable or failing")
	resumed := events.on("writes resumed")
	db := filepath.Join(t.TempDir(), "obs.db")
	opts := Options{Include: []string{"main.work"}, DB: db, SampleRate: 1, OTLP: liveOTLP(rcv.URL()), Logger: slog.New(events)}
	opts.OTLP.Hold = 0 // the default: main.work has no traced parent

	// The outage, driven by what the sink reports: down after the first
	// accepted request, back once the sink has seen the failure.
	outage := make(chan error, 1)
	go func() {
		select {
		case <-rcv.Accepted():
		case <-time.After(time.Minute):
			outage <- fmt.Errorf("no request reached the receiver")
			return
		}
		rcv.Stop()
		select {
		case <-failing:
		case <-time.After(time.Minute):
			outage <- fmt.Errorf("the sink never reported the endpoint down")
			return
		}
		rcv.Restart()
		outage <- nil
	}()
	// 4000 calls/s for 3 s, 10% errors: 12000 calls, 1200 errors.
	var out bytes.Buffer
	res, err := Run(context.Background(), []string{load, "rate", "4000", "3", "10"}, nil, &out, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-outage; err != nil {
		t.Fatal(err)
	}
	select {
	case <-resumed:
	default:
		t.Error("the sink never logged that writes resumed")
	}
	if !strings.Contains(out.String(), "made main.work calls=12000 errors=1200") {
		t.Fatalf("load output %q", out.String())
	}
	calls := readCalls(t, db)
	if len(calls) != 12000 || res.Sinks[0].ErrorsLost["main.work"] != 0 {
		t.Fatalf("store holds %d calls, want 12000 (store ledger %+v)", len(calls), res.Sinks[0])
	}
	got := rcv.Check(t, calls, true)
	errs := 0
	for _, c := range calls {
		if c.IsError() {
			errs++
			if got[c.ID] == nil {
				t.Errorf("error call %d never arrived as a span", c.ID)
			}
		}
	}
	if errs != 1200 {
		t.Errorf("store holds %d error calls, want 1200", errs)
	}
	l := res.Sinks[1]
	written, dropped, errLost := l.Totals()
	if errLost != 0 || written != uint64(len(got)) || written+dropped != 12000 {
		t.Errorf("otlp ledger: written %d, dropped %d, errors lost %d; the receiver holds %d spans of 12000 calls", written, dropped, errLost, len(got))
	}
	if dropped == 0 {
		t.Errorf("no ok span was dropped during the outage; the test did not test it")
	}
	want := fmt.Sprintf("otlp sink: sent %d records, lost %d (ok records not sent %d, error records lost 0)", written, dropped, dropped)
	if !strings.Contains(res.Summary(), want) {
		t.Errorf("exit line %q does not say %q", res.Summary(), want)
	}
	t.Logf("outage: %d of 12000 spans sent, %d ok spans dropped and counted; %s", written, dropped, res.Summary())
}
