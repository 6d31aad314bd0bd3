package otlp

import (
	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/obs-agent/obs-agent/internal/record"
)

// Field numbers of the OTLP messages the Encoder writes
// (opentelemetry/proto/collector/trace/v1 and trace/v1, common/v1,
// resource/v1).
const (
	fReqResourceSpans = 1 // ExportTraceServiceRequest.resource_spans
	fRSResource       = 1 // ResourceSpans.resource
	fRSScopeSpans     = 2 // ResourceSpans.scope_spans
	fSSScope          = 1 // ScopeSpans.scope
	fSSSpans          = 2 // ScopeSpans.spans
	fSpanTraceID      = 1
	fSpanSpanID       = 2
	fSpanParentSpanID = 4
	fSpanName         = 5
	fSpanKind         = 6
	fSpanStart        = 7
	fSpanEnd          = 8
	fSpanAttributes   = 9
	fSpanStatus       = 15
	fStatusMessage    = 2
	fStatusCode       = 3
	fKVKey            = 1
	fKVValue          = 2
	fAnyString        = 1
	fAnyBool          = 2
	fAnyInt           = 3

	spanKindInternal = 1 // Span.SpanKind SPAN_KIND_INTERNAL
	statusCodeError  = 2 // Status.StatusCode STATUS_CODE_ERROR
)

// Encoder writes the export request of one process's spans straight in
// the protobuf wire format, without building the message objects that
// Batch builds: the live sink's hot path, where a dozen allocations per
// span and reflection-driven marshalling cost more than the rest of the
// pipeline. Its bytes decode to exactly Batch.Request's message for the
// same calls (TestEncoderMatchesBatch). Not safe for concurrent use.
type Encoder struct {
	head  []byte // the Resource and the scope, encoded once
	spans []byte // the spans added, each a ScopeSpans.spans field
	span  []byte // scratch: one span's body
	val   []byte // scratch: one attribute's value
	out   []byte
	n     int
	ids   *idGen
	// The ids are a large part of a span's cost: a call's span id is
	// also its children's parent id, and consecutive spans mostly share
	// a trace, so both are remembered.
	spanIDs [spanIDSlots]struct {
		call uint64
		id   [8]byte
	}
	traceRoot uint64
	traceID   [16]byte
}

// spanIDSlots sizes the direct-mapped memo of span ids.
const spanIDSlots = 4096

// NewEncoder returns an encoder for p's spans, whose scope carries
// version.
func NewEncoder(p *Process, version string) *Encoder {
	e := &Encoder{ids: p.newIDGen()}
	// The resource and the scope are the same for every request: the
	// messages Batch builds, marshalled once.
	res, err := proto.Marshal(p.Resource())
	if err != nil {
		panic("otlp: marshal a resource: " + err.Error()) // plain strings and ints: never
	}
	scope, err := proto.Marshal(&commonpb.InstrumentationScope{Name: ScopeName, Version: version})
	if err != nil {
		panic("otlp: marshal a scope: " + err.Error())
	}
	e.head = appendBytes(e.head, fRSResource, res)
	e.head = appendBytes(e.head, fSSScope, scope) // inside ScopeSpans, see Bytes
	return e
}

// Reset empties the encoder, keeping its buffers.
func (e *Encoder) Reset() {
	e.spans, e.n = e.spans[:0], 0
}

// Len is the number of spans added.
func (e *Encoder) Len() int { return e.n }

// Add encodes call c (rootID names its trace), as Process.Span maps it.
func (e *Encoder) Add(c *record.Call, rootID uint64) {
	b := e.span[:0]
	if e.traceRoot != rootID || rootID == 0 {
		e.ids.put(e.traceID[:], 't', rootID)
		e.traceRoot = rootID
	}
	b = appendBytes(b, fSpanTraceID, e.traceID[:])
	b = appendBytes(b, fSpanSpanID, e.spanID(c.ID))
	if c.ParentID != 0 {
		b = appendBytes(b, fSpanParentSpanID, e.spanID(c.ParentID))
	}
	b = appendString(b, fSpanName, c.Function)
	b = protowire.AppendTag(b, fSpanKind, protowire.VarintType)
	b = protowire.AppendVarint(b, spanKindInternal)
	start, end := spanTimes(c)
	if start != 0 {
		b = protowire.AppendTag(b, fSpanStart, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, start)
	}
	if end != 0 {
		b = protowire.AppendTag(b, fSpanEnd, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, end)
	}
	e.val = appendString(e.val[:0], fAnyString, c.Function)
	b = appendKV(b, fSpanAttributes, AttrFunctionName, e.val)
	b = appendIntKV(b, AttrThreadID, int64(c.GoID))
	b = appendIntKV(b, AttrCallID, int64(c.ID))
	switch c.Status {
	case record.StatusError, record.StatusPanic:
		et := c.ErrorType
		if et == "" {
			et = errorTypeOther
		}
		e.val = appendString(e.val[:0], fAnyString, et)
		b = appendKV(b, fSpanAttributes, AttrErrorType, e.val)
		if c.Status == record.StatusPanic {
			b = appendKV(b, fSpanAttributes, AttrPanic, trueValue)
		}
		if c.ErrorTruncated {
			b = appendKV(b, fSpanAttributes, AttrErrorTruncated, trueValue)
		}
		status := appendString(e.val[:0], fStatusMessage, c.Error)
		status = protowire.AppendTag(status, fStatusCode, protowire.VarintType)
		status = protowire.AppendVarint(status, statusCodeError)
		e.val = status
		b = protowire.AppendTag(b, fSpanStatus, protowire.BytesType)
		b = protowire.AppendBytes(b, status)
	case record.StatusUnfinished:
		b = appendKV(b, fSpanAttributes, AttrUnfinished, trueValue)
	}
	e.span = b
	e.spans = protowire.AppendTag(e.spans, fSSSpans, protowire.BytesType)
	e.spans = protowire.AppendBytes(e.spans, b)
	e.n++
}

// spanID is call's span id, from the memo when it is there.
func (e *Encoder) spanID(call uint64) []byte {
	s := &e.spanIDs[call%spanIDSlots]
	if s.call != call || call == 0 {
		e.ids.put(s.id[:], 's', call)
		s.call = call
	}
	return s.id[:]
}

// Bytes is the encoded ExportTraceServiceRequest of the spans added; it is
// valid until the next Add or Reset.
func (e *Encoder) Bytes() []byte {
	// head holds the Resource field of ResourceSpans, then the scope
	// field of ScopeSpans: split it to nest the spans.
	resLen := resourceFieldLen(e.head)
	resField, scopeField := e.head[:resLen], e.head[resLen:]
	ss := len(scopeField) + len(e.spans)
	rs := len(resField) + protowire.SizeTag(fRSScopeSpans) + protowire.SizeBytes(ss)
	out := e.out[:0]
	out = protowire.AppendTag(out, fReqResourceSpans, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(rs))
	out = append(out, resField...)
	out = protowire.AppendTag(out, fRSScopeSpans, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(ss))
	out = append(out, scopeField...)
	out = append(out, e.spans...)
	e.out = out
	return out
}

// resourceFieldLen is the length of the leading Resource field in head.
func resourceFieldLen(head []byte) int {
	_, _, n := protowire.ConsumeTag(head)
	_, m := protowire.ConsumeBytes(head[n:])
	return n + m
}

// trueValue is an AnyValue holding true.
var trueValue = protowire.AppendVarint(protowire.AppendTag(nil, fAnyBool, protowire.VarintType), 1)

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendString(b []byte, num protowire.Number, v string) []byte {
	if v == "" {
		return b // proto3: the default is not written
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

// appendKV appends a KeyValue field num holding key and the encoded
// AnyValue value.
func appendKV(b []byte, num protowire.Number, key string, value []byte) []byte {
	n := protowire.SizeTag(fKVKey) + protowire.SizeBytes(len(key)) + protowire.SizeTag(fKVValue) + protowire.SizeBytes(len(value))
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = protowire.AppendTag(b, fKVKey, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, fKVValue, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

// appendIntKV appends an int span attribute without allocating.
func appendIntKV(b []byte, key string, v int64) []byte {
	var buf [1 + 10]byte // a tag and the longest varint
	val := protowire.AppendVarint(protowire.AppendTag(buf[:0], fAnyInt, protowire.VarintType), uint64(v))
	return appendKV(b, fSpanAttributes, key, val)
}
