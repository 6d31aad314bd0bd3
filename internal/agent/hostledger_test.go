package agent

import (
	"fmt"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestSessionCounts: what a host's sink wrote is counted per session and
// function (errors apart), so two sessions' functions of one name stay
// apart, however a batch interleaves them.
func TestSessionCounts(t *testing.T) {
	n := newSessionCounts()
	n.add([]record.Call{
		{ID: 1<<40 | 1, Function: "main.main"},
		{ID: 2<<40 | 1, Function: "main.main", Status: record.StatusError},
		{ID: 2<<40 | 2, Function: "main.main"},
		{ID: 1<<40 | 2, Function: "main.f"},
		{ID: 1<<40 | 3, Function: "main.main", Status: record.StatusPanic},
		{ID: 1<<40 | 4, Function: "main.main"},
	})
	if w, e := n.get(1, "main.main"); w != 3 || e != 1 {
		t.Errorf("session 1: %d written, %d errors; want 3, 1", w, e)
	}
	if w, e := n.get(1, "main.f"); w != 1 || e != 0 {
		t.Errorf("session 1 main.f: %d written, %d errors; want 1, 0", w, e)
	}
	if w, e := n.get(2, "main.main"); w != 2 || e != 1 {
		t.Errorf("session 2: %d written, %d errors; want 2, 1", w, e)
	}
}

// BenchmarkSessionCounts times the per-session count a host's sink writer
// adds to each record it writes (a batch of 2,048 over 3 sessions and 16
// functions).
func BenchmarkSessionCounts(b *testing.B) {
	batch := make([]record.Call, 2048)
	for i := range batch {
		batch[i] = record.Call{ID: uint64(i%3+1)<<40 | uint64(i), Function: fmt.Sprintf("main.f%d", i%16)}
	}
	n := newSessionCounts()
	b.ResetTimer()
	for range b.N {
		n.add(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/record")
}
