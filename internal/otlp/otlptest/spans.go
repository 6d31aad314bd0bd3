package otlptest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"testing"

	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"
	resourcepb "go.opentelemetry.io/proto/slim/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/result"
)

// Spans is a set of received spans: by span id (hex), each with its
// resource, the instrumentation scopes seen, and how many spans arrived
// again with an id already held. The in-process Receiver fills one, and so
// does ReadJSON from a real collector's file output, so that the checks
// below read what either received.
type Spans struct {
	ByID      map[string]*tracepb.Span
	Resources map[string]*resourcepb.Resource
	Scopes    map[string]bool
	Dups      int
}

// NewSpans returns an empty set.
func NewSpans() *Spans {
	return &Spans{ByID: map[string]*tracepb.Span{}, Resources: map[string]*resourcepb.Resource{}, Scopes: map[string]bool{}}
}

// Add takes the spans of one export request.
func (s *Spans) Add(req *coltracepb.ExportTraceServiceRequest) {
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			s.Scopes[ss.Scope.GetName()] = true
			for _, sp := range ss.Spans {
				k := hex.EncodeToString(sp.SpanId)
				if _, dup := s.ByID[k]; dup {
					s.Dups++
				}
				s.ByID[k] = sp
				s.Resources[k] = rs.Resource
			}
		}
	}
}

func (s *Spans) clone() *Spans {
	return &Spans{ByID: maps.Clone(s.ByID), Resources: maps.Clone(s.Resources), Scopes: maps.Clone(s.Scopes), Dups: s.Dups}
}

// ReadJSON adds the requests an OpenTelemetry Collector's file exporter
// wrote to path: one ExportTraceServiceRequest a line in the OTLP JSON
// encoding. A missing file adds nothing (that collector received nothing).
func (s *Spans) ReadJSON(t testing.TB, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range bytes.Split(raw, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		req, err := decodeOTLPJSON(line)
		if err != nil {
			t.Fatalf("%s line %d: %v", path, i+1, err)
		}
		s.Add(req)
	}
}

// decodeOTLPJSON decodes one request in the OTLP JSON encoding. It is the
// protobuf JSON mapping except that trace and span ids are hex, not
// base64: they are rewritten before protojson reads the request.
func decodeOTLPJSON(line []byte) (*coltracepb.ExportTraceServiceRequest, error) {
	var v any
	if err := json.Unmarshal(line, &v); err != nil {
		return nil, err
	}
	if err := hexIDsToBase64(v); err != nil {
		return nil, err
	}
	std, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := protojson.Unmarshal(std, &req); err != nil {
		return nil, err
	}
	return &req, nil
}

func hexIDsToBase64(v any) error {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && (k == "traceId" || k == "spanId" || k == "parentSpanId") {
				b, err := hex.DecodeString(s)
				if err != nil {
					return fmt.Errorf("%s %q: %w", k, s, err)
				}
				x[k] = base64.StdEncoding.EncodeToString(b)
				continue
			}
			if err := hexIDsToBase64(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := hexIDsToBase64(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// Check asserts that the spans are the calls (a store's): each call
// arrived exactly once as a span with the right name, kind, goroutine,
// times, parent, trace (its parent's), status and error text. With subset,
// calls may be missing (a sink that shed ok records), but every span must
// be one of the calls. It returns the spans by call id.
func (s *Spans) Check(t testing.TB, calls []record.Call, subset bool) map[uint64]*tracepb.Span {
	t.Helper()
	if s.Dups != 0 {
		t.Errorf("%d spans arrived twice", s.Dups)
	}
	if len(s.ByID) != len(calls) && !subset {
		t.Errorf("received %d spans, the store holds %d calls", len(s.ByID), len(calls))
	}
	got := ByCall(t, s.ByID)
	stored := map[uint64]bool{}
	for _, c := range calls {
		stored[c.ID] = true
	}
	for id := range got {
		if !stored[id] {
			t.Errorf("span of call %d, which is not stored", id)
		}
	}
	for _, c := range calls {
		sp, ok := got[c.ID]
		if !ok {
			if !subset {
				t.Errorf("call %d (%s, %v) never arrived", c.ID, c.Function, c.Status)
			}
			continue
		}
		checkSpan(t, &c, sp, got, stored[c.ParentID])
	}
	return got
}

// CheckResources asserts that every span came with the resource of the
// traced process: service and executable name exe, pid pid.
func (s *Spans) CheckResources(t testing.TB, exe string, pid int64) {
	t.Helper()
	for k, r := range s.Resources {
		if Attr(r.GetAttributes(), attrServiceName).GetStringValue() != exe || Attr(r.GetAttributes(), attrProcessPID).GetIntValue() != pid ||
			Attr(r.GetAttributes(), attrExecutableName).GetStringValue() != exe {
			t.Fatalf("span %s: resource %v; want service and executable %s, pid %d", k, r, exe, pid)
		}
	}
}

// TreeFunc returns the store's tree under a call, spawned goroutines
// included, limit 0 meaning all of it: query.Layer.Tree.
type TreeFunc func(ctx context.Context, id uint64, limit int) (result.Tree, error)

// CheckTrees asserts that the spans (by call id, as Check returns them)
// make one trace per root call of calls, holding exactly the store's tree
// under that root, and that at least minCross spans have their parent on
// another goroutine.
func CheckTrees(t testing.TB, calls []record.Call, got map[uint64]*tracepb.Span, tree TreeFunc, minCross int) {
	t.Helper()
	traces := map[string]map[uint64]bool{}
	for id, sp := range got {
		k := hex.EncodeToString(sp.TraceId)
		if traces[k] == nil {
			traces[k] = map[uint64]bool{}
		}
		traces[k][id] = true
	}
	roots, cross := 0, 0
	for _, c := range calls {
		if p, ok := got[c.ParentID]; ok && c.ParentID != 0 && Attr(p.Attributes, attrThreadID).GetIntValue() != int64(c.GoID) {
			cross++
		}
		if c.ParentID != 0 {
			continue
		}
		roots++
		tr, err := tree(context.Background(), c.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		under := tr.Calls
		trace := traces[hex.EncodeToString(got[c.ID].GetTraceId())]
		if len(trace) != len(under) {
			t.Errorf("root %d (%s): its trace has %d spans, the store's tree %d calls", c.ID, c.Function, len(trace), len(under))
		}
		for _, tc := range under {
			if !trace[tc.ID] {
				t.Errorf("call %d (%s) of root %d's tree is not in its trace", tc.ID, tc.Function, c.ID)
			}
		}
	}
	if roots != len(traces) {
		t.Errorf("the store has %d roots, the spans %d traces", roots, len(traces))
	}
	if cross < minCross {
		t.Errorf("%d spans have a parent on another goroutine; want at least %d", cross, minCross)
	}
}
