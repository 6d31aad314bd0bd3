package otlp

import (
	"testing"

	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestReplaceResource: one encoder of a file session (PID 0) writes the
// spans of two of its processes, each request given its process's
// resource by ReplaceResource; the two requests end to end decode to
// exactly what Batch builds with InProcess for each process (one
// ResourceSpans per process, process.pid the process's, the ids the
// session's), so the live sink and `export otlp` agree.
func TestReplaceResource(t *testing.T) {
	sess := Process{SessionID: 3, SessionStart: 1_700_000_000_000_000_000, Executable: "/usr/bin/app", ServiceName: "app"}
	calls := encoderCalls()
	e := NewEncoder(&sess, "v")
	b := NewBatch("v")
	var req []byte
	for i, pid := range []uint32{101, 202} {
		part := calls[i*3 : i*3+3]
		e.Reset()
		p := sess.InProcess(pid)
		for j := range part {
			e.Add(&part[j], uint64(3)<<40+1)
			b.Add(&p, &part[j], uint64(3)<<40+1)
		}
		var err error
		if req, err = ReplaceResource(req, e.Bytes(), ResourceField(&p)); err != nil {
			t.Fatal(err)
		}
	}
	var got coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(req, &got); err != nil {
		t.Fatalf("the replaced request does not decode: %v", err)
	}
	want := b.Request()
	if len(want.ResourceSpans) != 2 || !proto.Equal(&got, want) {
		t.Fatalf("replaced requests give\n%v\nBatch gives\n%v", &got, want)
	}
	for i, pid := range []int64{101, 202} {
		var seen int64
		for _, kv := range got.ResourceSpans[i].Resource.Attributes {
			if kv.Key == AttrProcessPID {
				seen = kv.Value.GetIntValue()
			}
		}
		if seen != pid {
			t.Errorf("resource %d: process.pid %d, want %d", i, seen, pid)
		}
	}
	if p := sess.InProcess(7); p.SessionID != sess.SessionID || string(p.SpanID(9)) != string(sess.SpanID(9)) {
		t.Error("InProcess changed the ids")
	}
	pidSession := Process{SessionID: 4, PID: 42}
	if q := pidSession.InProcess(43); q.ProcPID != 0 {
		t.Errorf("a pid session's Process took another pid: %+v", q)
	}
	if _, err := ReplaceResource(nil, []byte{0xff}, ResourceField(&sess)); err == nil {
		t.Error("garbage replaced without an error")
	}
}
