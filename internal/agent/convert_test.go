package agent

import (
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// TestPanicTableBounded: goroutines that panic and recover are never
// announced as done, so the table of panic values must stay bounded, keep
// the newest values, and still answer for a goroutine that panics again.
func TestPanicTableBounded(t *testing.T) {
	c := &converter{panics: map[pidGoid]panicValue{}}
	for goid := uint64(1); goid <= maxPanics+100; goid++ {
		c.panicValue(&uprobe.Event{GoID: goid}) // panic(nil): no type data needed
	}
	if len(c.panics) != maxPanics || len(c.panicOrder) != maxPanics {
		t.Fatalf("table holds %d values (%d in order), want %d", len(c.panics), len(c.panicOrder), maxPanics)
	}
	old := record.Call{GoID: 1, Status: record.StatusPanic}
	c.withPanic(&old)
	if old.Error != "" {
		t.Fatalf("the oldest value was kept: %+v", old)
	}
	recent := record.Call{GoID: maxPanics + 100, Status: record.StatusPanic}
	c.withPanic(&recent)
	if recent.ErrorType != "nil" || recent.Error != "panic(nil)" {
		t.Fatalf("the newest value is missing: %+v", recent)
	}
	c.panicValue(&uprobe.Event{GoID: maxPanics + 100}) // the same goroutine again
	if len(c.panicOrder) != maxPanics {
		t.Fatalf("a repeated goroutine took a second slot: %d", len(c.panicOrder))
	}
}
