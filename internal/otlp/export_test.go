package otlp

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"

	"github.com/obs-agent/obs-agent/internal/otlp/otlptest"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// synthStore writes a store of n calls over two hours in one session:
// chains of depth 3 with an error, a panic, an unfinished call, a
// truncated error and an orphan (its parent not stored) among them.
func synthStore(t *testing.T, n int) (string, []record.Call) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "obs.db")
	s, err := store.Open(path, store.Options{Clock: func() time.Time { return t0.Add(3 * time.Hour) }, NoBackgroundBuild: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RegisterFunctions([]record.Function{
		{Name: "main.main", Package: "main"}, {Name: "main.work", Package: "main"}, {Name: "main.leaf", Package: "main"},
	}); err != nil {
		t.Fatal(err)
	}
	sid, err := s.BeginSession(record.Session{PID: 42, Binary: "/usr/bin/app", Start: t0.UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	base := sid << 40
	var calls []record.Call
	var parent uint64
	for i := 1; i <= n; i++ {
		c := record.Call{ID: base + uint64(i), PID: 42, GoID: uint64(1 + i%3),
			// Two hours; some calls share a start, to page through ties.
			Start: t0.Add(time.Duration(i/2) * (2 * time.Hour / time.Duration(n))).UnixNano(), Duration: 1000}
		switch i % 3 {
		case 1:
			c.Function, parent = "main.main", c.ID
		default:
			c.Function, c.ParentID = "main.work", parent
			parent = c.ID
		}
		switch i % 11 {
		case 2:
			c.Status, c.ErrorType, c.Error = record.StatusError, "*errors.errorString", "not found"
		case 5:
			c.Status, c.ErrorType, c.Error = record.StatusPanic, "string", "boom"
		case 8:
			c.Status = record.StatusUnfinished
		case 9:
			c.Status, c.Error, c.ErrorTruncated = record.StatusError, strings.Repeat("x", 64), true
		}
		if i == n {
			c.ParentID = base + 1<<30 // never stored
		}
		calls = append(calls, c)
	}
	if err := s.WriteCalls(calls); err != nil {
		t.Fatal(err)
	}
	return path, calls
}

func openRO(t *testing.T, path string) *store.Store {
	t.Helper()
	s, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testExporter(t *testing.T, url string, mods ...func(*Config)) *Exporter {
	t.Helper()
	cfg := Config{Endpoint: url, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxElapsed: 10 * time.Second}
	for _, m := range mods {
		m(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func runExport(t *testing.T, s *store.Store, e Sender, state string, batch int, since time.Time) (Report, error) {
	t.Helper()
	x := &StoreExport{Store: s, Sender: e, StatePath: state, BatchSize: batch, Since: since}
	return x.Run(context.Background())
}

// checkSpans asserts that every call arrived as exactly one span
// (otlptest.Receiver.Check), and returns the spans by call id.
func checkSpans(t *testing.T, rcv *otlptest.Receiver, calls []record.Call) map[uint64]*tracepb.Span {
	t.Helper()
	if sc := rcv.Scopes(); len(calls) > 0 && (len(sc) != 1 || !sc[ScopeName]) {
		t.Errorf("instrumentation scopes %v, want only %s", sc, ScopeName)
	}
	return rcv.Check(t, calls, false)
}

// TestExportSynthetic covers every status, an orphan, hours, ties of
// start times across pages, and the resource.
func TestExportSynthetic(t *testing.T) {
	path, calls := synthStore(t, 300)
	s := openRO(t, path)
	rcv := otlptest.NewReceiver(t)
	rep, err := runExport(t, s, testExporter(t, rcv.URL()), filepath.Join(t.TempDir(), "st"), 7, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Spans != int64(len(calls)) || rep.Hours < 2 || rep.Requests < len(calls)/7 {
		t.Errorf("report %+v for %d calls over 2 hours", rep, len(calls))
	}
	checkSpans(t, rcv, calls)
	rcv.CheckResources(t, "app", 42)
}

// TestExportCompression: with compression none every request goes out
// without a Content-Encoding and every call still arrives as its span; by
// default every request is gzip; a name New does not know is refused.
func TestExportCompression(t *testing.T) {
	path, calls := synthStore(t, 50)
	s := openRO(t, path)
	for _, tc := range []struct{ compression, header string }{{"", "gzip"}, {CompressionNone, ""}} {
		rcv := otlptest.NewReceiver(t)
		e := testExporter(t, rcv.URL(), func(c *Config) { c.Compression = tc.compression })
		if _, err := runExport(t, s, e, filepath.Join(t.TempDir(), "st"), 7, time.Time{}); err != nil {
			t.Fatal(err)
		}
		checkSpans(t, rcv, calls)
		encs := rcv.Encodings()
		if len(encs) == 0 {
			t.Fatalf("compression %q: no request", tc.compression)
		}
		for _, enc := range encs {
			if enc != tc.header {
				t.Errorf("compression %q: a request with Content-Encoding %q, want %q", tc.compression, enc, tc.header)
			}
		}
	}
	if _, err := New(Config{Endpoint: "http://127.0.0.1:1/v1/traces", Compression: "zstd"}); err == nil || !strings.Contains(err.Error(), "want gzip or none") {
		t.Errorf("compression zstd: %v", err)
	}
}

// TestExportRetryAfter: a receiver that answers 503 or 429 with
// Retry-After, then recovers, loses nothing and gets nothing twice, and
// the exporter waits as long as it was told.
func TestExportRetryAfter(t *testing.T) {
	for _, code := range []int{503, 429} {
		t.Run(strings.TrimSpace(time.Duration(code).String()), func(t *testing.T) {
			path, calls := synthStore(t, 60)
			s := openRO(t, path)
			rcv := otlptest.NewReceiver(t)
			// The second request is refused twice with Retry-After: 1.
			rcv.SetRefuse(func(n, _ int) (int, string) {
				if n == 2 || n == 3 {
					return code, "1"
				}
				return 0, ""
			})
			rep, err := runExport(t, s, testExporter(t, rcv.URL()), filepath.Join(t.TempDir(), "st"), 16, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			checkSpans(t, rcv, calls)
			at := rcv.Requests()
			if len(at) != rep.Requests+2 {
				t.Fatalf("%d requests arrived for %d accepted and 2 refused", len(at), rep.Requests)
			}
			// The back-off is 10 ms: only Retry-After explains a second.
			for i := 2; i <= 3; i++ {
				if d := at[i].Sub(at[i-1]); d < time.Second {
					t.Errorf("retry %d came %v after the refusal; Retry-After said 1s", i-1, d)
				}
			}
		})
	}
}

// TestExportResume: an export cut short by a receiver that starts
// refusing after some spans is finished by running it again: every call
// arrives exactly once, and a third run sends nothing.
func TestExportResume(t *testing.T) {
	path, calls := synthStore(t, 200)
	s := openRO(t, path)
	state := filepath.Join(t.TempDir(), "obs.db.otlp-state")
	rcv := otlptest.NewReceiver(t)
	rcv.SetRefuse(func(_, accepted int) (int, string) {
		if accepted >= 50 {
			return 400, ""
		}
		return 0, ""
	})
	e := testExporter(t, rcv.URL())
	rep, err := runExport(t, s, e, state, 9, time.Time{})
	var perm *PermanentError
	if !errors.As(err, &perm) || perm.Status != 400 {
		t.Fatalf("first run: %v, want the receiver's 400", err)
	}
	if rep.Spans < 50 || rep.Spans >= int64(len(calls)) {
		t.Fatalf("first run sent %d spans", rep.Spans)
	}
	rcv.SetRefuse(nil)
	rep2, err := runExport(t, s, e, state, 9, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Spans+rep2.Spans != int64(len(calls)) {
		t.Errorf("runs sent %d + %d spans for %d calls", rep.Spans, rep2.Spans, len(calls))
	}
	checkSpans(t, rcv, calls)
	rep3, err := runExport(t, s, e, state, 9, time.Time{})
	if err != nil || rep3.Spans != 0 || rep3.Requests != 0 {
		t.Errorf("third run: %+v, %v; want nothing sent", rep3, err)
	}
	// A later --since is covered by the saved progress; an earlier one
	// is refused rather than silently skipping calls.
	if rep4, err := runExport(t, s, e, state, 9, t0.Add(time.Hour)); err != nil || rep4.Spans != 0 {
		t.Errorf("later --since: %+v, %v", rep4, err)
	}
	st2 := filepath.Join(t.TempDir(), "st2")
	if _, err := runExport(t, s, e, st2, 9, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := runExport(t, s, e, st2, 9, t0); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Errorf("earlier --since than the state's: %v, want a --since error", err)
	}
}

// TestExportIdempotentIDs: exporting the same store twice (fresh state)
// gives the same span and trace ids, so a backend deduplicates them.
func TestExportIdempotentIDs(t *testing.T) {
	path, _ := synthStore(t, 40)
	s := openRO(t, path)
	var ids [2]map[uint64]string
	for i := range ids {
		rcv := otlptest.NewReceiver(t)
		if _, err := runExport(t, s, testExporter(t, rcv.URL()), filepath.Join(t.TempDir(), "st"), 5, time.Time{}); err != nil {
			t.Fatal(err)
		}
		spans, _, _ := rcv.Snapshot()
		ids[i] = map[uint64]string{}
		for id, sp := range otlptest.ByCall(t, spans) {
			ids[i][id] = hex.EncodeToString(sp.TraceId) + "/" + hex.EncodeToString(sp.SpanId)
		}
	}
	if len(ids[0]) != 40 {
		t.Fatalf("%d spans", len(ids[0]))
	}
	for id, v := range ids[0] {
		if ids[1][id] != v {
			t.Errorf("call %d: ids %s then %s", id, v, ids[1][id])
		}
	}
}

var synthCall = record.Call{ID: 1<<40 | 1, PID: 1, GoID: 1, Function: "main.main", Start: t0.UnixNano(), Duration: 5}

// TestRetryAfterHoldsEveryRequest: a Retry-After on one request holds
// back the exporter's other requests too (the live sink has several in
// flight): a request started after the refusal waits as long as the one
// refused, and both arrive once.
func TestRetryAfterHoldsEveryRequest(t *testing.T) {
	p := &Process{SessionID: 1, SessionStart: t0.UnixNano(), PID: 42, Executable: "/usr/bin/app", ServiceName: "app"}
	var calls []record.Call
	for i := range 20 {
		calls = append(calls, record.Call{ID: 1<<40 + uint64(i+1), PID: 42, GoID: 1, Function: "main.work", Start: t0.UnixNano(), Duration: 1000})
	}
	rcv := otlptest.NewReceiver(t)
	rcv.SetRefuse(func(n, _ int) (int, string) {
		if n == 1 {
			return 429, "1"
		}
		return 0, ""
	})
	e := testExporter(t, rcv.URL())
	// The exporter logs the retry once it has read the refusal.
	refused := make(chan struct{})
	e.log = slog.New(onLog{"export failed; retrying", sync.OnceFunc(func() { close(refused) })})
	half := len(calls) / 2
	send := func(cs []record.Call) chan error {
		done := make(chan error, 1)
		b := NewBatch("test")
		for i := range cs {
			b.Add(p, &cs[i], cs[i].ID)
		}
		req := b.Request()
		go func() {
			_, err := e.Export(context.Background(), req)
			done <- err
		}()
		return done
	}
	first := send(calls[:half])
	<-refused
	second := send(calls[half:])
	for _, ch := range []chan error{first, second} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	at := rcv.Requests()
	if len(at) != 3 {
		t.Fatalf("%d requests arrived, want the refused one and two accepted", len(at))
	}
	for i := 1; i < 3; i++ {
		if d := at[i].Sub(at[0]); d < time.Second {
			t.Errorf("request %d arrived %v after the refusal; Retry-After said 1s for every request", i, d)
		}
	}
	checkSpans(t, rcv, calls)
}

// onLog is a slog handler that calls f on each message holding substr.
type onLog struct {
	substr string
	f      func()
}

func (h onLog) Enabled(context.Context, slog.Level) bool { return true }
func (h onLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.f()
	}
	return nil
}
func (h onLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h onLog) WithGroup(string) slog.Handler      { return h }
