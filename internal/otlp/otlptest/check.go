package otlptest

import (
	"bytes"
	"testing"

	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"

	"github.com/obs-agent/obs-agent/internal/record"
)

// The attribute keys Check reads (internal/otlp's; spelt out here because
// this package must not import it).
const (
	attrCallID         = "obs_agent.call_id"
	attrFunctionName   = "code.function.name"
	attrThreadID       = "thread.id"
	attrErrorType      = "error.type"
	attrPanic          = "obs_agent.panic"
	attrUnfinished     = "obs_agent.unfinished"
	attrErrorTruncated = "obs_agent.error_truncated"
	attrServiceName    = "service.name"
	attrProcessPID     = "process.pid"
	attrExecutableName = "process.executable.name"
)

// ByCall indexes spans by their call id attribute.
func ByCall(t testing.TB, spans map[string]*tracepb.Span) map[uint64]*tracepb.Span {
	t.Helper()
	out := map[uint64]*tracepb.Span{}
	for _, sp := range spans {
		v := Attr(sp.Attributes, attrCallID)
		if v == nil {
			t.Fatalf("span %x has no %s", sp.SpanId, attrCallID)
		}
		out[uint64(v.GetIntValue())] = sp
	}
	return out
}

// CheckResources is Spans.CheckResources on what the receiver accepted so
// far.
func (r *Receiver) CheckResources(t testing.TB, exe string, pid int64) {
	t.Helper()
	r.snapshot().CheckResources(t, exe, pid)
}

// Check is Spans.Check on what the receiver accepted so far.
func (r *Receiver) Check(t testing.TB, calls []record.Call, subset bool) map[uint64]*tracepb.Span {
	t.Helper()
	return r.snapshot().Check(t, calls, subset)
}

func checkSpan(t testing.TB, c *record.Call, sp *tracepb.Span, got map[uint64]*tracepb.Span, parentStored bool) {
	t.Helper()
	if sp.Name != c.Function || Attr(sp.Attributes, attrFunctionName).GetStringValue() != c.Function {
		t.Errorf("call %d: span name %q, want %q", c.ID, sp.Name, c.Function)
	}
	if sp.Kind != tracepb.Span_SPAN_KIND_INTERNAL {
		t.Errorf("call %d: kind %v", c.ID, sp.Kind)
	}
	if g := Attr(sp.Attributes, attrThreadID).GetIntValue(); uint64(g) != c.GoID {
		t.Errorf("call %d: thread.id %d, want goroutine %d", c.ID, g, c.GoID)
	}
	if sp.StartTimeUnixNano != uint64(c.Start) || sp.EndTimeUnixNano != uint64(c.Start+c.Duration) {
		t.Errorf("call %d: span [%d, %d], call starts %d for %d ns", c.ID, sp.StartTimeUnixNano, sp.EndTimeUnixNano, c.Start, c.Duration)
	}
	switch p := got[c.ParentID]; {
	case c.ParentID == 0:
		if len(sp.ParentSpanId) != 0 {
			t.Errorf("root call %d has parent span %x", c.ID, sp.ParentSpanId)
		}
	case p != nil:
		if !bytes.Equal(sp.ParentSpanId, p.SpanId) {
			t.Errorf("call %d: parent span %x is not call %d's span", c.ID, sp.ParentSpanId, c.ParentID)
		} else if !bytes.Equal(sp.TraceId, p.TraceId) {
			t.Errorf("call %d: trace %x, its parent's %x", c.ID, sp.TraceId, p.TraceId)
		}
	case parentStored:
		// Only with subset: the parent's span was not sent.
	default:
		// The parent is not stored: the span still names it (so a
		// backend that has it links them), and starts its own trace.
		if len(sp.ParentSpanId) != 8 {
			t.Errorf("orphan call %d: parent span %x", c.ID, sp.ParentSpanId)
		}
	}
	st := sp.Status.GetCode()
	et := Attr(sp.Attributes, attrErrorType).GetStringValue()
	switch c.Status {
	case record.StatusError, record.StatusPanic:
		want := c.ErrorType
		if want == "" {
			want = "_OTHER"
		}
		if st != tracepb.Status_STATUS_CODE_ERROR || sp.Status.GetMessage() != c.Error || et != want {
			t.Errorf("call %d (%v): status %v %q, error.type %q; want ERROR %q %q", c.ID, c.Status, st, sp.Status.GetMessage(), et, c.Error, want)
		}
		if panicked := Attr(sp.Attributes, attrPanic).GetBoolValue(); panicked != (c.Status == record.StatusPanic) {
			t.Errorf("call %d (%v): %s = %v", c.ID, c.Status, attrPanic, panicked)
		}
		if tr := Attr(sp.Attributes, attrErrorTruncated).GetBoolValue(); tr != c.ErrorTruncated {
			t.Errorf("call %d: %s = %v", c.ID, attrErrorTruncated, tr)
		}
	default:
		if st != tracepb.Status_STATUS_CODE_UNSET || et != "" {
			t.Errorf("call %d (%v): status %v, error.type %q", c.ID, c.Status, st, et)
		}
		if u := Attr(sp.Attributes, attrUnfinished).GetBoolValue(); u != (c.Status == record.StatusUnfinished) {
			t.Errorf("call %d (%v): %s = %v", c.ID, c.Status, attrUnfinished, u)
		}
	}
}
