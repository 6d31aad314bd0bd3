package queue

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// inFlight gates a fakeWriter's calls: it counts the calls under way and
// can hold the next n of them until released.
type inFlight struct {
	active, calls atomic.Int64
	mu            sync.Mutex
	hold          int           // calls still to hold
	arrived       chan int64    // each held call, with the calls under way as it arrived
	release       chan struct{} // closed to let the held calls go
	heldBatches   [][]record.Call
}

func (g *inFlight) holdNext(n int) {
	g.mu.Lock()
	g.hold, g.arrived, g.release = n, make(chan int64, n), make(chan struct{})
	g.mu.Unlock()
}

func (g *inFlight) hook(max *atomic.Int64) func([]record.Call) {
	return func(b []record.Call) {
		a := g.active.Add(1)
		g.calls.Add(1)
		for {
			m := max.Load()
			if a <= m || max.CompareAndSwap(m, a) {
				break
			}
		}
		g.mu.Lock()
		held := g.hold > 0
		arrived, release := g.arrived, g.release
		if held {
			g.hold--
			g.heldBatches = append(g.heldBatches, append([]record.Call(nil), b...))
		}
		g.mu.Unlock()
		if held {
			arrived <- a
			<-release
		}
	}
}

// countingWriter counts the end of each call in g.active.
type countingWriter struct {
	*fakeWriter
	g *inFlight
}

func (w countingWriter) WriteCalls(b []record.Call) error {
	defer w.g.active.Add(-1)
	return w.fakeWriter.WriteCalls(b)
}

// waitHeld waits for n held calls to be under way at once; the deadline
// only turns a hang into a failure.
func waitHeld(t *testing.T, g *inFlight, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-g.arrived:
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d writes are under way at once", i, n)
		}
	}
}

// TestWritersInFlightAtOnce: with Writers 3, three batches are written at
// once, error records first; every record is written once and counted.
func TestWritersInFlightAtOnce(t *testing.T) {
	log, _ := newLogger()
	q := New(fastOpts(Options{BatchSize: 10, Writers: 3, Logger: log, Name: "otlp", ShedOKWhileFailing: true}))
	var p pushed
	p.pushMixed(q, "main.w", 90, 3)
	g := &inFlight{}
	var max atomic.Int64
	fw := &fakeWriter{}
	fw.hook = g.hook(&max)
	g.holdNext(3)
	done := startDrain(q, countingWriter{fw, g})
	waitHeld(t, g, 3)
	close(g.release)
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	checkInvariant(t, q, &p)
	got := fw.snapshot()
	if len(got) != 90 || len(fw.ids) != 90 {
		t.Fatalf("%d records written (%d distinct), want 90", len(got), len(fw.ids))
	}
	// The three batches taken first, held at once, are the 30 error
	// records.
	for i, b := range g.heldBatches {
		if errsByFunc(b)["main.w"] != 10 {
			t.Errorf("batch %d written at first holds %d error records of 10, while error records waited", i, errsByFunc(b)["main.w"])
		}
	}
	if m := max.Load(); m != 3 {
		t.Errorf("at most %d writes under way at once, want 3", m)
	}
}

// TestWritersOutageOneRetries: while the destination fails, only the
// first writer retries (one write under way at a time, once the writes
// already under way have failed); ok records are shed and counted, error
// records wait and are all written when it is back, and then the helpers
// write again, three at once.
func TestWritersOutageOneRetries(t *testing.T) {
	log, lb := newLogger()
	resumed := make(chan struct{})
	log = slog.New(onMessage{log.Handler(), "writes resumed", sync.OnceFunc(func() { close(resumed) })})
	q := New(fastOpts(Options{BatchSize: 10, Writers: 3, Logger: log, Name: "otlp", ShedOKWhileFailing: true}))
	g := &inFlight{}
	var max atomic.Int64
	fw := &fakeWriter{fail: storeErr(&downErr{"down", "is unreachable"}), calls: make(chan error, 1)}
	var failedBack atomic.Int64
	var overlap atomic.Int64 // calls that began beside another once the first three had failed
	inner := g.hook(&max)
	fw.hook = func(b []record.Call) {
		if failedBack.Load() >= 3 && g.active.Load() > 0 {
			overlap.Add(1)
		}
		inner(b)
	}
	w := countingWriter{fw, g}
	var p pushed
	p.pushMixed(q, "main.o", 60, 2)
	done := make(chan error, 1)
	go func() { done <- q.Drain(failCounter{w, &failedBack}) }()
	// Twenty failed writes: the outage lasts.
	for fails := 0; fails < 20; {
		if err := <-fw.calls; err != nil {
			fails++
		}
	}
	if n := overlap.Load(); n != 0 {
		t.Errorf("%d writes began beside another while the destination was failing", n)
	}
	for range 10 {
		p.push(q, call("main.o", record.StatusOK)) // shed: it is down
	}
	// Back: once a write succeeded, the helpers write again, three at
	// once (error records: they are never shed).
	fw.setFail(nil)
	select {
	case <-resumed:
	case <-time.After(30 * time.Second):
		t.Fatal("writes never resumed")
	}
	g.holdNext(3)
	for range 90 {
		p.push(q, call("main.after", record.StatusError))
	}
	waitHeld(t, g, 3)
	close(g.release)
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	checkInvariant(t, q, &p)
	if got := errsByFunc(fw.snapshot())["main.o"]; got != 30 {
		t.Errorf("%d error records written, want all 30", got)
	}
	if lost := q.ErrorsLost(); len(lost) != 0 {
		t.Errorf("error records lost: %v", lost)
	}
	if _, drop := q.Counts(); drop["main.o"] < 10 {
		t.Errorf("dropped %d ok records, want at least the 10 pushed while it was down", drop["main.o"])
	}
	if n := lb.count("writes resumed"); n != 1 {
		t.Errorf("resumption logged %d times, want once:\n%s", n, lb)
	}
}

// onMessage calls f for each record whose message holds substr.
type onMessage struct {
	slog.Handler
	substr string
	f      func()
}

func (h onMessage) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.f()
	}
	return h.Handler.Handle(ctx, r)
}

func (h onMessage) WithAttrs(a []slog.Attr) slog.Handler {
	return onMessage{h.Handler.WithAttrs(a), h.substr, h.f}
}

// failCounter counts the failed writes that have returned.
type failCounter struct {
	Writer
	n *atomic.Int64
}

func (f failCounter) WriteCalls(b []record.Call) error {
	err := f.Writer.WriteCalls(b)
	if err != nil {
		f.n.Add(1)
	}
	return err
}

// TestWritersGiveUpWaitsForHelpers: the first writer gives up after
// Close while both helpers' writes are still under way; they fail after
// it, and their records are counted all the same: the queue gives up only
// once they have come back, so pushed == written + dropped exactly, and
// every error record is counted lost (nothing was written, and there is
// no journal).
func TestWritersGiveUpWaitsForHelpers(t *testing.T) {
	log, _ := newLogger()
	q := New(fastOpts(Options{BatchSize: 10, Writers: 3, CloseTimeout: 20 * time.Millisecond, Logger: log, Name: "otlp", ShedOKWhileFailing: true}))
	var p pushed
	p.pushMixed(q, "main.g", 60, 4)
	// Both helpers take a batch and wait to write it until the first
	// writer has given up; the first writer waits to write until both
	// helpers hold their batch.
	held, release, bothHeld := make(chan struct{}, 2), make(chan struct{}), make(chan struct{})
	var helperCalls atomic.Int64
	q.testHelperWrite = func() {
		if helperCalls.Add(1) <= 2 {
			held <- struct{}{}
			<-release
		}
	}
	q.testFirstGaveUp = func() { close(release) }
	var once sync.Once
	fw := &fakeWriter{fail: storeErr(&downErr{"down", "is unreachable"})}
	fw.hook = func([]record.Call) { once.Do(func() { <-bothHeld }) }
	done := startDrain(q, fw)
	for i := range 2 {
		select {
		case <-held:
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d helpers hold a batch", i)
		}
	}
	close(bothHeld)
	q.Close()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "error records could not be kept and are lost (no spill directory)") {
		t.Fatalf("Drain = %v", err)
	}
	if n := helperCalls.Load(); n != 2 {
		t.Errorf("helpers wrote %d times, want their 2 batches once each", n)
	}
	checkInvariant(t, q, &p)
	if lost := q.ErrorsLost(); lost["main.g"] != 15 {
		t.Errorf("error records lost %v, want all 15 (nothing was written)", lost)
	}
	if errs, oks, _ := q.Depth(); errs+oks != 0 {
		t.Errorf("%d error and %d ok records left in the lanes", errs, oks)
	}
}

// pushMixed pushes n records of fn, every one in every an error record
// (the first among them).
func (p *pushed) pushMixed(q *Queue, fn string, n, every int) {
	for i := range n {
		st := record.StatusOK
		if i%every == 0 {
			st = record.StatusError
		}
		p.push(q, call(fn, st))
	}
}
