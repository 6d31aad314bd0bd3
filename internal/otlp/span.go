// Package otlp owns obs-agent's OpenTelemetry trace export: it maps
// recorded calls to OTLP spans (one span per call, the trace being the
// tree under one root call, goroutines included), sends them as batched
// OTLP/HTTP protobuf requests with gzip, TLS, headers and bounded retries
// that honour Retry-After, and exports what a store already holds,
// resumably (ExportStore). It depends on the OTLP protobuf types and
// net/http only, not on the OpenTelemetry SDK, and knows nothing of the
// agent, so a live sink can reuse the mapping and the exporter as they are.
package otlp

import (
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"path/filepath"

	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/slim/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"

	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"

	"github.com/obs-agent/obs-agent/internal/record"
)

// Attribute keys. The standard ones follow the OpenTelemetry semantic
// conventions; the obs_agent.* ones carry what no convention covers.
const (
	AttrServiceName    = "service.name"
	AttrProcessPID     = "process.pid"
	AttrExecutableName = "process.executable.name"
	AttrExecutablePath = "process.executable.path"
	AttrFunctionName   = "code.function.name"
	AttrThreadID       = "thread.id" // the goroutine id
	AttrErrorType      = "error.type"
	// AttrCallID is the call's id in the store, so a span leads back to
	// `obs-agent query call ID`.
	AttrCallID = "obs_agent.call_id"
	// AttrSessionID is the tracing session (a resource attribute).
	AttrSessionID = "obs_agent.session_id"
	// AttrPanic is true on a span whose call was unwound by a panic.
	AttrPanic = "obs_agent.panic"
	// AttrUnfinished is true on a span whose call was still running when
	// the process or the trace ended; its end is the last time it was seen.
	AttrUnfinished = "obs_agent.unfinished"
	// AttrErrorTruncated is true when the error text was cut at the read
	// bound.
	AttrErrorTruncated = "obs_agent.error_truncated"
	// errorTypeOther is the semantic conventions' fallback error.type.
	errorTypeOther = "_OTHER"
)

// ScopeName is the instrumentation scope of every span.
const ScopeName = "github.com/obs-agent/obs-agent"

// Process describes the traced process of one session: the resource of its
// spans, and the salt of its span and trace ids.
type Process struct {
	SessionID    uint64
	SessionStart int64 // Unix ns; part of the ids, so two stores' session 1 differ
	// PID is the session's pid, part of the ids: 0 for a session that
	// traces every process of a file (attach --exe, a --cgroup program).
	PID uint32
	// ProcPID, when not 0, is the process of such a session the spans
	// are of: process.pid in their resource (InProcess).
	ProcPID     uint32
	Executable  string // path of the traced binary; "" unknown
	ServiceName string // OTEL_SERVICE_NAME, or the binary's name
}

// InProcess is p for the spans of process pid: the same ids (a session's
// call ids are unique across its processes), and pid as process.pid,
// when p is a session of every process of a file (PID 0).
func (p *Process) InProcess(pid uint32) Process {
	q := *p
	if p.PID == 0 {
		q.ProcPID = pid
	}
	return q
}

// ProcessOf is the Process of a stored session; service overrides the
// service name (OTEL_SERVICE_NAME), else it is the binary's base name.
func ProcessOf(s record.Session, service string) Process {
	p := Process{SessionID: s.ID, SessionStart: s.Start, PID: s.PID, Executable: s.Binary, ServiceName: service}
	if p.ServiceName == "" {
		p.ServiceName = exeName(s.Binary)
	}
	if p.ServiceName == "" {
		p.ServiceName = "unknown_service"
	}
	return p
}

func exeName(path string) string {
	if path == "" {
		return ""
	}
	return filepath.Base(path)
}

// SessionOf is the session a call id belongs to: ids are
// session<<40 | sequence (docs/schema.md).
func SessionOf(callID uint64) uint64 { return callID >> 40 }

// The ids. A span id is the first 8 bytes, a trace id all 16, of one
// AES-128 block: the encryption of (kind, call id) under a key that is the
// first 16 bytes of SHA-256 over the session's start time, its pid and its
// id. The session's start and pid make the ids differ between stores
// (hosts) whose session and call numbers coincide; the call id makes them
// unique in the session: AES is a permutation, so a trace id (the whole
// block) never repeats within a session, and a span id repeats only as any
// 8-byte digest might. One hash per session and one AES block per id
// (about 30 ns with AES-NI) instead of a SHA-256 per id (about 150 ns): the
// ids were the largest part of encoding a span, and a flood's spans each
// need two (every call a root: its span id and its trace id).

// idGen derives the ids of one session's calls. Not safe for concurrent
// use: it keeps its block buffers, so an id costs no allocation.
type idGen struct {
	blk     cipher.Block
	in, out [aes.BlockSize]byte
}

// newIDGen is the id generator of p's session.
func (p *Process) newIDGen() *idGen {
	var b [8 + 4 + 8]byte
	binary.BigEndian.PutUint64(b[0:], uint64(p.SessionStart))
	binary.BigEndian.PutUint32(b[8:], p.PID)
	binary.BigEndian.PutUint64(b[12:], p.SessionID)
	key := sha256.Sum256(b[:])
	blk, err := aes.NewCipher(key[:16])
	if err != nil {
		panic("otlp: an AES-128 key of 16 bytes: " + err.Error()) // never
	}
	return &idGen{blk: blk}
}

// put fills dst (at most 16 bytes) with the id of kind ('s' span, 't'
// trace) of call callID, never all zero (invalid in OTLP).
func (g *idGen) put(dst []byte, kind byte, callID uint64) {
	g.in[0] = kind
	binary.BigEndian.PutUint64(g.in[1:], callID)
	g.blk.Encrypt(g.out[:], g.in[:])
	copy(dst, g.out[:])
	if allZero(dst) {
		dst[len(dst)-1] = 1
	}
}

// SpanID is the span id of call callID: derived, so re-exporting the same
// store gives the same id and a backend deduplicates it.
func (p *Process) SpanID(callID uint64) []byte { return p.newIDGen().id('s', callID, 8) }

// TraceID is the trace id of the tree under root call rootID.
func (p *Process) TraceID(rootID uint64) []byte { return p.newIDGen().id('t', rootID, 16) }

// id is a new slice holding put's n bytes.
func (g *idGen) id(kind byte, callID uint64, n int) []byte {
	id := make([]byte, n)
	g.put(id, kind, callID)
	return id
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Span maps one call to its span. rootID is the root of the call's tree:
// the topmost ancestor the caller knows (the call itself when it has no
// parent), which names the trace.
func (p *Process) Span(c *record.Call, rootID uint64) *tracepb.Span {
	return p.span(c, rootID, p.newIDGen())
}

// span is Span with the session's id generator.
func (p *Process) span(c *record.Call, rootID uint64, ids *idGen) *tracepb.Span {
	start, end := spanTimes(c)
	sp := &tracepb.Span{
		TraceId:           ids.id('t', rootID, 16),
		SpanId:            ids.id('s', c.ID, 8),
		Name:              c.Function,
		Kind:              tracepb.Span_SPAN_KIND_INTERNAL,
		StartTimeUnixNano: start,
		EndTimeUnixNano:   end,
		Attributes: []*commonpb.KeyValue{
			str(AttrFunctionName, c.Function),
			num(AttrThreadID, int64(c.GoID)),
			num(AttrCallID, int64(c.ID)),
		},
	}
	if c.ParentID != 0 {
		sp.ParentSpanId = ids.id('s', c.ParentID, 8)
	}
	switch c.Status {
	case record.StatusError, record.StatusPanic:
		sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: c.Error}
		et := c.ErrorType
		if et == "" {
			et = errorTypeOther
		}
		sp.Attributes = append(sp.Attributes, str(AttrErrorType, et))
		if c.Status == record.StatusPanic {
			sp.Attributes = append(sp.Attributes, boolean(AttrPanic))
		}
		if c.ErrorTruncated {
			sp.Attributes = append(sp.Attributes, boolean(AttrErrorTruncated))
		}
	case record.StatusUnfinished:
		sp.Attributes = append(sp.Attributes, boolean(AttrUnfinished))
	}
	return sp
}

// spanTimes are a call's span start and end: an unfinished call ends when
// it was last seen; times before 1970 are clamped to 0.
func spanTimes(c *record.Call) (start, end uint64) {
	return uint64(max(c.Start, 0)), uint64(max(c.Start+max(c.Duration, 0), 0))
}

// Resource is the resource of the session's spans.
func (p *Process) Resource() *resourcepb.Resource {
	r := &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
		str(AttrServiceName, p.ServiceName),
		num(AttrProcessPID, int64(cmp.Or(p.ProcPID, p.PID))),
		num(AttrSessionID, int64(p.SessionID)),
	}}
	if p.Executable != "" {
		r.Attributes = append(r.Attributes, str(AttrExecutableName, exeName(p.Executable)), str(AttrExecutablePath, p.Executable))
	}
	return r
}

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func num(k string, v int64) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}}
}

func boolean(k string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}}
}

// Batch gathers spans into one export request, grouped by process (one
// ResourceSpans each: a session, or a process of a session of a file).
// Not safe for concurrent use.
type Batch struct {
	version string
	rs      map[procKey]*tracepb.ResourceSpans
	ids     map[uint64]*idGen // by session
	order   []procKey
	n       int
}

// procKey is the process a Process's spans are of.
type procKey struct {
	session uint64
	pid     uint32
}

// NewBatch returns an empty batch whose scope carries version.
func NewBatch(version string) *Batch {
	return &Batch{version: version, rs: map[procKey]*tracepb.ResourceSpans{}, ids: map[uint64]*idGen{}}
}

// Add maps call c of process p (rootID names its trace) into the batch.
func (b *Batch) Add(p *Process, c *record.Call, rootID uint64) {
	k := procKey{p.SessionID, p.ProcPID}
	r, ok := b.rs[k]
	if !ok {
		r = &tracepb.ResourceSpans{
			Resource:   p.Resource(),
			ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: ScopeName, Version: b.version}}},
		}
		b.rs[k] = r
		b.order = append(b.order, k)
	}
	ids, ok := b.ids[p.SessionID]
	if !ok {
		ids = p.newIDGen()
		b.ids[p.SessionID] = ids
	}
	r.ScopeSpans[0].Spans = append(r.ScopeSpans[0].Spans, p.span(c, rootID, ids))
	b.n++
}

// Len is the number of spans in the batch.
func (b *Batch) Len() int { return b.n }

// Request is the export request of the batch's spans.
func (b *Batch) Request() *coltracepb.ExportTraceServiceRequest {
	req := &coltracepb.ExportTraceServiceRequest{}
	for _, s := range b.order {
		req.ResourceSpans = append(req.ResourceSpans, b.rs[s])
	}
	return req
}

// Reset empties the batch.
func (b *Batch) Reset() {
	clear(b.rs)
	b.order = b.order[:0]
	b.n = 0
}
