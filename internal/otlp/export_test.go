package otlp

import (
	"context"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"

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

func testExporter(t *testing.T, url string) *Exporter {
	t.Helper()
	e, err := New(Config{Endpoint: url, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxElapsed: 10 * time.Second})
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

// byCall indexes received spans by their call id attribute.
func byCall(t *testing.T, spans map[string]*tracepb.Span) map[uint64]*tracepb.Span {
	t.Helper()
	out := map[uint64]*tracepb.Span{}
	for _, sp := range spans {
		v := attr(sp.Attributes, AttrCallID)
		if v == nil {
			t.Fatalf("span %x has no %s", sp.SpanId, AttrCallID)
		}
		out[uint64(v.GetIntValue())] = sp
	}
	return out
}

// checkSpans asserts that every call arrived as exactly one span with the
// right name, goroutine, parent, trace, status and error text, and
// returns the spans by call id.
func checkSpans(t *testing.T, rcv *receiver, calls []record.Call) map[uint64]*tracepb.Span {
	t.Helper()
	spans, _, dups := rcv.snapshot()
	if dups != 0 {
		t.Errorf("%d spans arrived twice", dups)
	}
	if len(spans) != len(calls) {
		t.Errorf("receiver holds %d spans, store %d calls", len(spans), len(calls))
	}
	got := byCall(t, spans)
	stored := map[uint64]bool{}
	for _, c := range calls {
		stored[c.ID] = true
	}
	for _, c := range calls {
		sp, ok := got[c.ID]
		if !ok {
			t.Errorf("call %d (%s) never arrived", c.ID, c.Function)
			continue
		}
		if sp.Name != c.Function || attr(sp.Attributes, AttrFunctionName).GetStringValue() != c.Function {
			t.Errorf("call %d: span name %q, want %q", c.ID, sp.Name, c.Function)
		}
		if sp.Kind != tracepb.Span_SPAN_KIND_INTERNAL {
			t.Errorf("call %d: kind %v", c.ID, sp.Kind)
		}
		if g := attr(sp.Attributes, AttrThreadID).GetIntValue(); uint64(g) != c.GoID {
			t.Errorf("call %d: thread.id %d, want goroutine %d", c.ID, g, c.GoID)
		}
		if sp.StartTimeUnixNano != uint64(c.Start) || sp.EndTimeUnixNano != uint64(c.Start+c.Duration) {
			t.Errorf("call %d: span [%d, %d], call starts %d for %d ns", c.ID, sp.StartTimeUnixNano, sp.EndTimeUnixNano, c.Start, c.Duration)
		}
		switch {
		case c.ParentID == 0:
			if len(sp.ParentSpanId) != 0 {
				t.Errorf("root call %d has parent span %x", c.ID, sp.ParentSpanId)
			}
		case stored[c.ParentID]:
			p := got[c.ParentID]
			if p == nil || hex.EncodeToString(sp.ParentSpanId) != hex.EncodeToString(p.SpanId) {
				t.Errorf("call %d: parent span %x is not call %d's span", c.ID, sp.ParentSpanId, c.ParentID)
			} else if hex.EncodeToString(sp.TraceId) != hex.EncodeToString(p.TraceId) {
				t.Errorf("call %d: trace %x, its parent's %x", c.ID, sp.TraceId, p.TraceId)
			}
		default:
			// The parent is not stored: the span still names it (so a
			// backend that has it links them), and starts its own trace.
			if len(sp.ParentSpanId) != 8 {
				t.Errorf("orphan call %d: parent span %x", c.ID, sp.ParentSpanId)
			}
		}
		st := sp.Status.GetCode()
		et := attr(sp.Attributes, AttrErrorType).GetStringValue()
		switch c.Status {
		case record.StatusError, record.StatusPanic:
			want := c.ErrorType
			if want == "" {
				want = "_OTHER"
			}
			if st != tracepb.Status_STATUS_CODE_ERROR || sp.Status.GetMessage() != c.Error || et != want {
				t.Errorf("call %d (%v): status %v %q, error.type %q; want ERROR %q %q", c.ID, c.Status, st, sp.Status.GetMessage(), et, c.Error, want)
			}
			if panicked := attr(sp.Attributes, AttrPanic).GetBoolValue(); panicked != (c.Status == record.StatusPanic) {
				t.Errorf("call %d (%v): %s = %v", c.ID, c.Status, AttrPanic, panicked)
			}
			if tr := attr(sp.Attributes, AttrErrorTruncated).GetBoolValue(); tr != c.ErrorTruncated {
				t.Errorf("call %d: %s = %v", c.ID, AttrErrorTruncated, tr)
			}
		default:
			if st != tracepb.Status_STATUS_CODE_UNSET || et != "" {
				t.Errorf("call %d (%v): status %v, error.type %q", c.ID, c.Status, st, et)
			}
			if u := attr(sp.Attributes, AttrUnfinished).GetBoolValue(); u != (c.Status == record.StatusUnfinished) {
				t.Errorf("call %d (%v): %s = %v", c.ID, c.Status, AttrUnfinished, u)
			}
		}
	}
	return got
}

// TestExportSynthetic covers every status, an orphan, hours, ties of
// start times across pages, and the resource.
func TestExportSynthetic(t *testing.T) {
	path, calls := synthStore(t, 300)
	s := openRO(t, path)
	rcv := newReceiver(t)
	rep, err := runExport(t, s, testExporter(t, rcv.url()), filepath.Join(t.TempDir(), "st"), 7, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Spans != int64(len(calls)) || rep.Hours < 2 || rep.Requests < len(calls)/7 {
		t.Errorf("report %+v for %d calls over 2 hours", rep, len(calls))
	}
	checkSpans(t, rcv, calls)
	_, res, _ := rcv.snapshot()
	for k, r := range res {
		if attr(r.Attributes, AttrServiceName).GetStringValue() != "app" || attr(r.Attributes, AttrProcessPID).GetIntValue() != 42 ||
			attr(r.Attributes, AttrExecutableName).GetStringValue() != "app" {
			t.Fatalf("span %s resource %v", k, r)
		}
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
			rcv := newReceiver(t)
			// The second request is refused twice with Retry-After: 1.
			rcv.refuse = func(n, _ int) (int, string) {
				if n == 2 || n == 3 {
					return code, "1"
				}
				return 0, ""
			}
			rep, err := runExport(t, s, testExporter(t, rcv.url()), filepath.Join(t.TempDir(), "st"), 16, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			checkSpans(t, rcv, calls)
			rcv.mu.Lock()
			at := append([]time.Time(nil), rcv.requests...)
			rcv.mu.Unlock()
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
	rcv := newReceiver(t)
	rcv.refuse = func(_, accepted int) (int, string) {
		if accepted >= 50 {
			return 400, ""
		}
		return 0, ""
	}
	e := testExporter(t, rcv.url())
	rep, err := runExport(t, s, e, state, 9, time.Time{})
	var perm *PermanentError
	if !errors.As(err, &perm) || perm.Status != 400 {
		t.Fatalf("first run: %v, want the receiver's 400", err)
	}
	if rep.Spans < 50 || rep.Spans >= int64(len(calls)) {
		t.Fatalf("first run sent %d spans", rep.Spans)
	}
	rcv.mu.Lock()
	rcv.refuse = nil
	rcv.mu.Unlock()
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
		rcv := newReceiver(t)
		if _, err := runExport(t, s, testExporter(t, rcv.url()), filepath.Join(t.TempDir(), "st"), 5, time.Time{}); err != nil {
			t.Fatal(err)
		}
		spans, _, _ := rcv.snapshot()
		ids[i] = map[uint64]string{}
		for id, sp := range byCall(t, spans) {
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
