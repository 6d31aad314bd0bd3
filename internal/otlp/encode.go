package otlp

import (
	"encoding/binary"

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

	// The wire types, for tags written as bytes (field<<3 | type).
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2

	spanKindInternal = 1 // Span.SpanKind SPAN_KIND_INTERNAL
	statusCodeError  = 2 // Status.StatusCode STATUS_CODE_ERROR
)

// Encoder writes the export request of one process's spans straight in
// the protobuf wire format, without building the message objects that
// Batch builds: the live sink's hot path, where a dozen allocations per
// span and reflection-driven marshalling cost more than the rest of the
// pipeline. Its bytes decode to exactly Batch.Request's message for the
// same calls (TestEncoderMatchesBatch). Not safe for concurrent use.
//
// What is the same in every span is encoded once: the keys of the
// attributes with their framing, and, for the function of the last span,
// its name and code.function.name fields. A span's body is written in
// place behind its tag, and the request's head in front of the spans,
// so nothing is copied twice.
type Encoder struct {
	head []byte // the Resource and the scope, encoded once
	// spans holds reserve bytes for the request's head, then the spans
	// added, each a ScopeSpans.spans field.
	spans   []byte
	reserve int
	starts  []int // where each span starts in spans
	rel     []int // scratch: starts in Bytes's slice
	deflate deflateState
	gz      []byte // Gzipped's
	val     []byte // scratch: one attribute's value
	n       int
	ids     *idGen
	// fn is the function of the last span; fnFields are its name and
	// kind fields and its code.function.name attribute.
	fn       string
	fnFields []byte
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
	// The head, two tags and two lengths go in front of the spans.
	e.reserve = len(e.head) + 2*(protowire.SizeTag(fReqResourceSpans)+binary.MaxVarintLen64)
	e.Reset()
	return e
}

// Reset empties the encoder, keeping its buffers.
func (e *Encoder) Reset() {
	if cap(e.spans) < e.reserve {
		e.spans = make([]byte, e.reserve, e.reserve+64<<10)
	}
	e.spans, e.n, e.starts = e.spans[:e.reserve], 0, e.starts[:0]
}

// Len is the number of spans added.
func (e *Encoder) Len() int { return e.n }

// Attribute keys with their KeyValue framing up to the value's length:
// the key field, then the value field's tag (kvHead).
var (
	threadIDHead = kvHead(AttrThreadID)
	callIDHead   = kvHead(AttrCallID)
)

// kvHead is a KeyValue's bytes before its value's length: the key field
// and the value field's tag.
func kvHead(key string) []byte {
	b := protowire.AppendTag(nil, fKVKey, protowire.BytesType)
	b = protowire.AppendString(b, key)
	return protowire.AppendTag(b, fKVValue, protowire.BytesType)
}

// Add encodes call c (rootID names its trace), as Process.Span maps it.
func (e *Encoder) Add(c *record.Call, rootID uint64) {
	// The span's tag, then one byte for its length, which takes more
	// only for a span of 128 bytes or more (a long error text): its body
	// is then moved to make room.
	e.starts = append(e.starts, len(e.spans))
	b := append(e.spans, byte(fSSSpans<<3|wireBytes), 0)
	at := len(b)
	if e.traceRoot != rootID || rootID == 0 {
		e.ids.put(e.traceID[:], 't', rootID)
		e.traceRoot = rootID
	}
	b = append(b, fSpanTraceID<<3|wireBytes, 16)
	b = append(b, e.traceID[:]...)
	b = append(b, fSpanSpanID<<3|wireBytes, 8)
	b = append(b, e.spanID(c.ID)...)
	if c.ParentID != 0 {
		b = append(b, fSpanParentSpanID<<3|wireBytes, 8)
		b = append(b, e.spanID(c.ParentID)...)
	}
	if c.Function != e.fn || e.fnFields == nil {
		e.setFunction(c.Function)
	}
	b = append(b, e.fnFields...)
	start, end := spanTimes(c)
	if start != 0 {
		b = append(b, fSpanStart<<3|wireFixed64)
		b = binary.LittleEndian.AppendUint64(b, start)
	}
	if end != 0 {
		b = append(b, fSpanEnd<<3|wireFixed64)
		b = binary.LittleEndian.AppendUint64(b, end)
	}
	b = appendIntAttr(b, threadIDHead, int64(c.GoID))
	b = appendIntAttr(b, callIDHead, int64(c.ID))
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
	if n := len(b) - at; n < 0x80 {
		b[at-1] = byte(n)
	} else {
		// Make room for the longer length and move the body behind it.
		extra := protowire.SizeVarint(uint64(n)) - 1
		b = append(b, make([]byte, extra)...)
		copy(b[at+extra:], b[at:at+n])
		protowire.AppendVarint(b[at-1:at-1], uint64(n))
	}
	e.spans = b
	e.n++
}

// setFunction encodes the fields that depend on the function alone: the
// span's name and kind and its code.function.name attribute.
func (e *Encoder) setFunction(fn string) {
	b := appendString(e.fnFields[:0], fSpanName, fn)
	b = protowire.AppendTag(b, fSpanKind, protowire.VarintType)
	b = protowire.AppendVarint(b, spanKindInternal)
	e.val = appendString(e.val[:0], fAnyString, fn)
	e.fnFields = appendKV(b, fSpanAttributes, AttrFunctionName, e.val)
	e.fn = fn
}

// appendIntAttr appends an int span attribute whose key and framing are
// head (kvHead).
func appendIntAttr(b, head []byte, v int64) []byte {
	// The value: an AnyValue of one field, tag and varint.
	vl := 1 + protowire.SizeVarint(uint64(v))
	b = append(b, fSpanAttributes<<3|wireBytes, byte(len(head)+1+vl)) // under 128: keys are short
	b = append(b, head...)
	b = append(b, byte(vl), fAnyInt<<3|wireVarint)
	return protowire.AppendVarint(b, uint64(v))
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
	spans := len(e.spans) - e.reserve
	ss := len(scopeField) + spans
	rs := len(resField) + protowire.SizeTag(fRSScopeSpans) + protowire.SizeBytes(ss)
	var lens [2 * (1 + binary.MaxVarintLen64)]byte
	l := protowire.AppendTag(lens[:0], fReqResourceSpans, protowire.BytesType)
	l = protowire.AppendVarint(l, uint64(rs))
	hl := len(l)
	l = protowire.AppendTag(l, fRSScopeSpans, protowire.BytesType)
	l = protowire.AppendVarint(l, uint64(ss))
	// Right before the spans: the request's tag and length, the resource,
	// the ScopeSpans tag and length, the scope.
	at := e.reserve - len(l) - len(e.head)
	out := e.spans[at:]
	n := copy(out, l[:hl])
	n += copy(out[n:], resField)
	n += copy(out[n:], l[hl:])
	copy(out[n:], scopeField)
	return out
}

// AppendGzip appends to dst Bytes compressed as one gzip member, by the
// encoder's own deflate (deflate.go), which knows where the spans begin:
// what the live sink sends with gzip on.
func (e *Encoder) AppendGzip(dst []byte) []byte {
	raw := e.Bytes()
	base := len(e.spans) - len(raw)
	e.rel = e.rel[:0]
	for _, s := range e.starts {
		e.rel = append(e.rel, s-base)
	}
	return appendGzip(dst, raw, e.rel, &e.deflate)
}

// Gzipped is AppendGzip into a buffer of the encoder's, valid until the
// next call.
func (e *Encoder) Gzipped() []byte {
	e.gz = e.AppendGzip(e.gz[:0])
	return e.gz
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
