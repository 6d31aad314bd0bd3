// Package otlptest owns an in-process OTLP/HTTP traces receiver for tests:
// it decodes each request as a real receiver does (gzip, then protobuf),
// keeps every span it accepted (or, made by NewLeanReceiver for floods,
// only each span's ids, name and status), counts span ids that arrive
// twice, and can refuse requests or go down (its port closed) and come
// back on the same address. It also owns the checks of received spans against a store's
// calls, for what this receiver got and for what a real collector wrote
// (Spans). It does not import internal/otlp, so that package's own tests
// can use it.
package otlptest

import (
	"compress/gzip"
	"errors"
	"io"
	"net"
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

// Receiver is the in-process endpoint.
type Receiver struct {
	t    testing.TB
	addr string
	tls  bool
	srv  *httptest.Server

	mu       sync.Mutex
	got      *Spans
	requests []time.Time // arrival of every request, accepted or not
	// encodings are the Content-Encoding of every request ("": none).
	encodings []string
	refuse    func(n int, accepted int) (status int, retryAfter string)
	// accepted is signalled (without blocking) after each accepted request.
	accepted chan struct{}
	lean     map[[8]byte]LeanSpan // a lean receiver's spans (NewLeanReceiver)
}

// NewReceiver starts a receiver on a loopback port; it stops at the end
// of the test.
func NewReceiver(t testing.TB) *Receiver { return newReceiver(t, false, false) }

// NewTLSReceiver starts an https receiver with httptest's certificate
// (Certificate returns it).
func NewTLSReceiver(t testing.TB) *Receiver { return newReceiver(t, true, false) }

// newReceiver starts a receiver; a lean one (NewLeanReceiver) keeps only
// what LeanSpan holds. Everything its handler reads is set before its
// server starts: a request comes from another process, through a socket
// the race detector sees no ordering through.
func newReceiver(t testing.TB, useTLS, lean bool) *Receiver {
	r := &Receiver{t: t, tls: useTLS, got: NewSpans(), accepted: make(chan struct{}, 1)}
	if lean {
		r.lean = map[[8]byte]LeanSpan{}
	}
	r.start(nil)
	t.Cleanup(r.Stop)
	return r
}

func (r *Receiver) start(ln net.Listener) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	if ln != nil {
		s.Listener.Close()
		s.Listener = ln
	}
	if r.tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	r.mu.Lock()
	r.srv = s
	r.addr = s.Listener.Addr().String()
	r.mu.Unlock()
}

// URL is the traces endpoint, http(s)://127.0.0.1:PORT/v1/traces.
func (r *Receiver) URL() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	scheme := "http://"
	if r.tls {
		scheme = "https://"
	}
	return scheme + r.addr + "/v1/traces"
}

// Certificate is the https receiver's certificate.
func (r *Receiver) Certificate() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.srv.Certificate().Raw
}

// Stop takes the receiver down: it answers the requests in flight (so a
// span it kept was also acknowledged), then its port is closed and
// connections are refused. Stopping twice is harmless.
func (r *Receiver) Stop() {
	r.mu.Lock()
	s := r.srv
	r.srv = nil
	r.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// Restart brings a stopped receiver back on the same address.
func (r *Receiver) Restart() {
	r.mu.Lock()
	addr := r.addr
	r.mu.Unlock()
	var ln net.Listener
	var err error
	// The port was just closed: rebinding it may take a moment.
	for range 100 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("otlptest: listen again on %s: %v", addr, err)
	}
	r.start(ln)
}

// SetRefuse installs a function that decides before a request is
// accepted: a non-zero status refuses it (with Retry-After when
// retryAfter != ""). n counts requests so far, this one included;
// accepted counts the spans accepted so far. nil accepts everything.
func (r *Receiver) SetRefuse(f func(n, accepted int) (status int, retryAfter string)) {
	r.mu.Lock()
	r.refuse = f
	r.mu.Unlock()
}

// Accepted is signalled after a request was accepted (a buffered channel
// of one: a receive means at least one request arrived since the last).
func (r *Receiver) Accepted() <-chan struct{} { return r.accepted }

func (r *Receiver) serve(w http.ResponseWriter, hr *http.Request) {
	arrived := time.Now()
	// Requests are decoded in parallel, as a collector does, and only
	// then checked and kept under the lock, in one step: a refusal sees
	// the requests and spans before it, and a span kept was acknowledged.
	req, lean, status, msg := r.decode(hr)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, arrived)
	r.encodings = append(r.encodings, hr.Header.Get("Content-Encoding"))
	if status != 0 {
		if msg != "" {
			http.Error(w, msg, status)
		}
		return
	}
	if r.refuse != nil {
		if st, ra := r.refuse(len(r.requests), len(r.got.ByID)+len(r.lean)); st != 0 {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			http.Error(w, "refused by the test", st)
			return
		}
	}
	for _, s := range lean {
		if _, dup := r.lean[s.id]; dup {
			r.got.Dups++
		}
		r.lean[s.id] = s.LeanSpan
	}
	if req != nil {
		r.got.Add(req)
	}
	b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(b) //nolint:errcheck // the client's problem
	select {
	case r.accepted <- struct{}{}:
	default:
	}
}

// decode reads one request (a lean receiver's spans only from the wire
// format); a non-zero status is the answer to a bad one (no answer when
// msg is "": the connection was cut by Stop).
func (r *Receiver) decode(hr *http.Request) (*coltracepb.ExportTraceServiceRequest, []leanSpan, int, string) {
	if hr.Method != http.MethodPost || hr.URL.Path != "/v1/traces" {
		r.t.Errorf("otlptest: request %s %s", hr.Method, hr.URL.Path)
		return nil, nil, http.StatusNotFound, "not found"
	}
	if ct := hr.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		r.t.Errorf("otlptest: Content-Type %q", ct)
	}
	var raw []byte
	var err error
	switch ce := hr.Header.Get("Content-Encoding"); ce {
	case "gzip":
		zr, zerr := gzip.NewReader(hr.Body)
		if zerr != nil {
			r.t.Errorf("otlptest: gzip: %v", zerr)
			return nil, nil, http.StatusBadRequest, "bad gzip"
		}
		raw, err = io.ReadAll(zr)
	case "": // an exporter with compression none
		raw, err = io.ReadAll(hr.Body)
	default:
		r.t.Errorf("otlptest: Content-Encoding %q, want gzip or none", ce)
		return nil, nil, http.StatusUnsupportedMediaType, "want gzip or no encoding"
	}
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
			return nil, nil, http.StatusBadRequest, "" // cut by Stop
		}
		r.t.Errorf("otlptest: read body: %v", err)
		return nil, nil, http.StatusBadRequest, "bad body"
	}
	if r.lean != nil {
		spans, err := decodeLean(raw, map[string]string{})
		if err != nil {
			r.t.Errorf("otlptest: protobuf: %v", err)
			return nil, nil, http.StatusBadRequest, "bad protobuf"
		}
		return nil, spans, 0, ""
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		r.t.Errorf("otlptest: protobuf: %v", err)
		return nil, nil, http.StatusBadRequest, "bad protobuf"
	}
	return &req, nil, 0, ""
}

// Snapshot returns the accepted spans and their resources by span id (hex),
// and how many spans arrived more than once.
func (r *Receiver) Snapshot() (map[string]*tracepb.Span, map[string]*resourcepb.Resource, int) {
	s := r.snapshot()
	return s.ByID, s.Resources, s.Dups
}

// snapshot is a copy of what the receiver accepted so far.
func (r *Receiver) snapshot() *Spans {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got.clone()
}

// Scopes are the instrumentation scope names seen.
func (r *Receiver) Scopes() map[string]bool { return r.snapshot().Scopes }

// Requests are the arrival times of every request, accepted or not.
func (r *Receiver) Requests() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.requests...)
}

// Encodings are the Content-Encoding headers of every request, accepted
// or not ("" for a request sent without compression).
func (r *Receiver) Encodings() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.encodings...)
}

// Attr returns attribute k of kvs, nil when absent.
func Attr(kvs []*commonpb.KeyValue, k string) *commonpb.AnyValue {
	for _, kv := range kvs {
		if kv.Key == k {
			return kv.Value
		}
	}
	return nil
}
