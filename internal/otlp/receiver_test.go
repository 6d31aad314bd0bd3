package otlp

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/slim/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// receiver is an in-process OTLP/HTTP traces endpoint: it decodes each
// request as a real receiver does (gzip, then protobuf) and keeps every
// span it accepted, counting any span id that arrives twice.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	spans    map[string]*tracepb.Span
	res      map[string]*resourcepb.Resource // by span id
	dups     int
	requests []time.Time // arrival of every request, accepted or not
	// refuse, when set, decides before a request is accepted: a non-zero
	// status refuses it (with Retry-After when retryAfter != "").
	refuse func(n int, accepted int) (status int, retryAfter string)
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, spans: map[string]*tracepb.Span{}, res: map[string]*resourcepb.Resource{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() string { return r.srv.URL + "/v1/traces" }

func (r *receiver) serve(w http.ResponseWriter, hr *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, time.Now())
	if hr.Method != http.MethodPost || hr.URL.Path != "/v1/traces" {
		r.t.Errorf("request %s %s", hr.Method, hr.URL.Path)
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if ct := hr.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		r.t.Errorf("Content-Type %q", ct)
	}
	if ce := hr.Header.Get("Content-Encoding"); ce != "gzip" {
		r.t.Errorf("Content-Encoding %q, want gzip", ce)
		http.Error(w, "want gzip", http.StatusUnsupportedMediaType)
		return
	}
	zr, err := gzip.NewReader(hr.Body)
	if err != nil {
		r.t.Errorf("gzip: %v", err)
		http.Error(w, "bad gzip", http.StatusBadRequest)
		return
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		r.t.Errorf("gunzip: %v", err)
		http.Error(w, "bad gzip", http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		r.t.Errorf("protobuf: %v", err)
		http.Error(w, "bad protobuf", http.StatusBadRequest)
		return
	}
	if r.refuse != nil {
		if st, ra := r.refuse(len(r.requests), len(r.spans)); st != 0 {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			http.Error(w, "refused by the test", st)
			return
		}
	}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			if ss.Scope.GetName() != ScopeName {
				r.t.Errorf("scope %q", ss.Scope.GetName())
			}
			for _, sp := range ss.Spans {
				k := hex.EncodeToString(sp.SpanId)
				if _, dup := r.spans[k]; dup {
					r.dups++
				}
				r.spans[k] = sp
				r.res[k] = rs.Resource
			}
		}
	}
	b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(b) //nolint:errcheck // the client's problem
}

// snapshot returns the accepted spans and the duplicate count.
func (r *receiver) snapshot() (map[string]*tracepb.Span, map[string]*resourcepb.Resource, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.spans), maps.Clone(r.res), r.dups
}

// attr returns attribute k of kvs, nil when absent.
func attr(kvs []*commonpb.KeyValue, k string) *commonpb.AnyValue {
	for _, kv := range kvs {
		if kv.Key == k {
			return kv.Value
		}
	}
	return nil
}
