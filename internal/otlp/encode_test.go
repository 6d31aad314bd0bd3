package otlp

import (
	"bytes"
	"compress/gzip"
	"io"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/obs-agent/obs-agent/internal/record"
)

// encoderCalls covers every status and attribute, a root, children, a
// call before 1970 and empty texts.
func encoderCalls() []record.Call {
	base := uint64(3) << 40
	return []record.Call{
		{ID: base + 1, GoID: 1, Function: "main.main", Start: 1_700_000_000_000_000_000, Duration: 5000},
		{ID: base + 2, ParentID: base + 1, GoID: 1, Function: "main.(*T).Work", Start: 1_700_000_000_000_000_100, Duration: 10,
			Status: record.StatusError, ErrorType: "*errors.errorString", Error: "not found"},
		{ID: base + 3, ParentID: base + 2, GoID: 9, Function: "main.leaf", Start: 1_700_000_000_000_000_200, Status: record.StatusPanic, ErrorType: "string", Error: "boom"},
		{ID: base + 4, ParentID: base + 1, GoID: 1 << 40, Function: "main.open", Start: 1_700_000_000_000_001_000, Duration: 7, Status: record.StatusUnfinished},
		{ID: base + 5, ParentID: base + 1, Function: "main.trunc", Start: -5, Duration: 3, Status: record.StatusError, Error: strings.Repeat("x", 300), ErrorTruncated: true},
		{ID: base + 6, Function: "main.noerrtext", Status: record.StatusError},
	}
}

// TestEncoderMatchesBatch: the wire encoder's request decodes to exactly
// the message Batch builds for the same calls, so the live sink and
// `export otlp` send the same spans.
func TestEncoderMatchesBatch(t *testing.T) {
	p := Process{SessionID: 3, SessionStart: 1_700_000_000_000_000_000, PID: 42, Executable: "/usr/bin/app", ServiceName: "app"}
	calls := encoderCalls()
	for _, version := range []string{"1.2.3", ""} {
		e := NewEncoder(&p, version)
		b := NewBatch(version)
		for round := range 2 { // the second round reuses the buffers
			e.Reset()
			b.Reset()
			for i := range calls[round:] {
				c := &calls[round+i]
				e.Add(c, uint64(3)<<40+1)
				b.Add(&p, c, uint64(3)<<40+1)
			}
			var got coltracepb.ExportTraceServiceRequest
			if err := proto.Unmarshal(e.Bytes(), &got); err != nil {
				t.Fatalf("version %q: the encoder's bytes do not decode: %v", version, err)
			}
			if want := b.Request(); !proto.Equal(&got, want) {
				t.Fatalf("version %q round %d: encoder gives\n%v\nBatch gives\n%v", version, round, &got, want)
			}
			if e.Len() != len(calls)-round {
				t.Errorf("Len %d", e.Len())
			}
		}
	}
}

// BenchmarkEncode compares the two ways to the request body of 512 spans:
// Batch (message objects, then proto.Marshal) and Encoder (wire format
// directly). Run both in one run: only their ratio means anything on a
// shared machine.
func BenchmarkEncode(b *testing.B) {
	p := Process{SessionID: 1, PID: 42, Executable: "/usr/bin/app", ServiceName: "app"}
	calls := make([]record.Call, 512)
	for i := range calls {
		calls[i] = record.Call{ID: uint64(1<<40 + i + 1), ParentID: uint64(1<<40 + i/2), GoID: 7, Function: "main.work", Start: 1e18 + int64(i)*1000, Duration: 500}
		if i%100 == 0 {
			calls[i].Status, calls[i].ErrorType, calls[i].Error = record.StatusError, "*errors.errorString", "work: injected failure"
		}
	}
	b.Run("batch+marshal", func(b *testing.B) {
		bt := NewBatch("v")
		b.ReportAllocs()
		for range b.N {
			bt.Reset()
			for i := range calls {
				bt.Add(&p, &calls[i], 1<<40)
			}
			if _, err := proto.Marshal(bt.Request()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(calls)), "ns/span")
	})
	b.Run("encoder", func(b *testing.B) {
		e := NewEncoder(&p, "v")
		b.ReportAllocs()
		for range b.N {
			e.Reset()
			for i := range calls {
				e.Add(&calls[i], 1<<40)
			}
			_ = e.Bytes()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(calls)), "ns/span")
	})
	// A flood's spans as the live sink sees them: every call a root, and
	// fresh ids in every round, so no id comes from the memo.
	b.Run("encoder-flood", func(b *testing.B) {
		e := NewEncoder(&p, "v")
		calls := floodCalls(2048, 1<<40+1)
		b.ReportAllocs()
		for range b.N {
			e.Reset()
			for i := range calls {
				calls[i].ID += uint64(len(calls))
				e.Add(&calls[i], calls[i].ID)
			}
			_ = e.Bytes()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(calls)), "ns/span")
	})
}

// floodCalls are n calls shaped like `load flood 2 SECS 1`'s, as the
// live sink sees them: two goroutines calling main.work in a loop, each
// call a root (its callers are not traced), ids in order, 1% errors. Their
// ids start at first, so a benchmark round can give every span fresh
// ids, as a flood does (the encoder's id memo then never hits).
func floodCalls(n int, first uint64) []record.Call {
	calls := make([]record.Call, n)
	for i := range calls {
		calls[i] = record.Call{ID: first + uint64(i), GoID: uint64(20 + i%2), Function: "main.work",
			Start: 1_800_000_000_000_000_000 + int64(i)*6500, Duration: 350 + int64(i%7)*40}
		if i%100 == 0 {
			calls[i].Status, calls[i].ErrorType, calls[i].Error = record.StatusError, "*errors.errorString", "work: injected failure"
		}
	}
	return calls
}

// BenchmarkGzip compares compressors and levels on the body of a request
// of 2,048 flood spans (the live sink's batch, otlpBatch in
// internal/agent): the standard library's default, BestSpeed and
// Huffman-only levels, and klauspost/compress's gzip at BestSpeed (what the
// exporter uses) and its stateless mode. CPU per span and compressed bytes
// per span, in one run.
func BenchmarkGzip(b *testing.B) {
	p := Process{SessionID: 1, SessionStart: 1_800_000_000_000_000_000, PID: 42, ServiceName: "app"}
	e := NewEncoder(&p, "v")
	calls := floodCalls(2048, 1<<40+1)
	for i := range calls {
		e.Add(&calls[i], calls[i].ID)
	}
	raw := e.Bytes()
	type compressor interface {
		Reset(io.Writer)
		Write([]byte) (int, error)
		Close() error
	}
	for _, c := range []struct {
		name string
		new  func() compressor
	}{
		{"std-default", func() compressor { w, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression); return w }},
		{"std-best-speed", func() compressor { w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return w }},
		{"std-huffman-only", func() compressor { w, _ := gzip.NewWriterLevel(nil, gzip.HuffmanOnly); return w }},
		{"klauspost-best-speed", func() compressor { w, _ := kgzip.NewWriterLevel(nil, kgzip.BestSpeed); return w }},
		{"klauspost-stateless", func() compressor { w, _ := kgzip.NewWriterLevel(nil, kgzip.StatelessCompression); return w }},
		{"zstd-fastest", func() compressor {
			w, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
			return w
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var zb bytes.Buffer
			zw := c.new()
			for range b.N {
				zb.Reset()
				zw.Reset(&zb)
				zw.Write(raw) //nolint:errcheck // a bytes.Buffer
				zw.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(calls)), "ns/span")
			b.ReportMetric(float64(zb.Len())/float64(len(calls)), "gzip-bytes/span")
			b.ReportMetric(float64(len(raw))/float64(len(calls)), "raw-bytes/span")
		})
	}
	b.Run("encoder-gzip", func(b *testing.B) {
		var body []byte
		for range b.N {
			body = e.AppendGzip(body[:0])
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(calls)), "ns/span")
		b.ReportMetric(float64(len(body))/float64(len(calls)), "gzip-bytes/span")
		b.ReportMetric(float64(len(raw))/float64(len(calls)), "raw-bytes/span")
	})
}

// TestIDs: the ids are derived (the same session and call give the same
// ids, through Process and through the Encoder alike), unique within a
// session, never zero, and differ between two sessions whose session and
// call numbers coincide (two hosts' stores).
func TestIDs(t *testing.T) {
	p := Process{SessionID: 1, SessionStart: 1_800_000_000_000_000_000, PID: 42}
	other := p
	other.SessionStart++
	spans, traces := map[string]bool{}, map[string]bool{}
	const n = 200_000
	for id := uint64(1 << 40); id < 1<<40+n; id++ {
		s, tr := string(p.SpanID(id)), string(p.TraceID(id))
		if len(s) != 8 || len(tr) != 16 {
			t.Fatalf("call %d: span id %x, trace id %x", id, s, tr)
		}
		if allZero([]byte(s)) || allZero([]byte(tr)) {
			t.Fatalf("call %d: a zero id", id)
		}
		if spans[s] || traces[tr] {
			t.Fatalf("call %d: an id repeats", id)
		}
		spans[s], traces[tr] = true, true
		if id%1000 == 0 {
			if string(p.SpanID(id)) != s || string(p.TraceID(id)) != tr {
				t.Fatalf("call %d: ids not deterministic", id)
			}
			if string(other.SpanID(id)) == s || string(other.TraceID(id)) == tr {
				t.Fatalf("call %d: two sessions share an id", id)
			}
		}
	}
	// The encoder's ids (memoised) are the same.
	e := NewEncoder(&p, "v")
	c := record.Call{ID: 1<<40 + 7, ParentID: 1<<40 + 3, Function: "f"}
	e.Add(&c, 1<<40+1)
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(e.Bytes(), &req); err != nil {
		t.Fatal(err)
	}
	sp := req.ResourceSpans[0].ScopeSpans[0].Spans[0]
	if !bytes.Equal(sp.SpanId, p.SpanID(c.ID)) || !bytes.Equal(sp.ParentSpanId, p.SpanID(c.ParentID)) || !bytes.Equal(sp.TraceId, p.TraceID(1<<40+1)) {
		t.Fatalf("encoder ids %x/%x/%x differ from Process's", sp.TraceId, sp.SpanId, sp.ParentSpanId)
	}
}
