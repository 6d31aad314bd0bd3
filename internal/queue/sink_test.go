package queue

import (
	"fmt"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/record"
)

// TestShedOKWhileFailing: a sink whose ok records are worth little late
// (live spans) drops them, counted, while the destination is down, and
// keeps every error record until it is back; afterwards ok records flow
// again.
func TestShedOKWhileFailing(t *testing.T) {
	log, lb := newLogger()
	q := New(fastOpts(Options{BatchSize: 10, Logger: log, Name: "otlp", ShedOKWhileFailing: true}))
	w := &fakeWriter{fail: storeErr(&downErr{"down", "is unreachable"}), calls: make(chan error, 1)}
	var p pushed
	for i := range 50 {
		st := record.StatusOK
		if i%5 == 0 {
			st = record.StatusError
		}
		p.push(q, call("main.s", st))
	}
	done := startDrain(q, w)
	// Once a write has failed, new ok records are shed at once. The
	// second failed write proves the first one's failure was noted (Drain
	// writes one batch at a time).
	for fails := 0; fails < 2; {
		if err := <-w.calls; err != nil {
			fails++
		}
	}
	for range 20 {
		p.push(q, call("main.s", record.StatusOK))
	}
	p.push(q, call("main.s", record.StatusPanic))
	if _, drop := q.Counts(); drop["main.s"] < 20 {
		t.Fatalf("dropped %d while failing, want at least the 20 pushed after the failure", drop["main.s"])
	}
	w.setFail(nil)
	p.push(q, call("main.after", record.StatusOK)) // may be shed if pushed before the next write
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	checkInvariant(t, q, &p)
	if got := errsByFunc(w.snapshot())["main.s"]; got != 11 {
		t.Errorf("%d error records written, want all 11", got)
	}
	if lost := q.ErrorsLost(); len(lost) != 0 {
		t.Errorf("error records lost: %v", lost)
	}
	if n := lb.count(`msg="otlp is unreachable: error records are kept in memory up to`); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, lb)
	}
	if !strings.Contains(lb.String(), "ok records are dropped and counted until it works again") {
		t.Errorf("the message does not say ok records are dropped:\n%s", lb)
	}
}

// TestRefusedBatchWrittenSingly: a destination that refuses some records
// of a batch from memory (not an outage) gets the others one by one; the
// refused ones are dropped, counted (as error records lost when they are
// errors) and reported, and the queue goes on.
func TestRefusedBatchWrittenSingly(t *testing.T) {
	log, lb := newLogger()
	q := New(fastOpts(Options{BatchSize: 100, Logger: log}))
	// The destination already holds two of the records.
	var p pushed
	var recs []record.Call
	for i := range 30 {
		st := record.StatusOK
		if i%3 == 0 {
			st = record.StatusError
		}
		c := call(fmt.Sprintf("main.r%d", i%2), st)
		recs = append(recs, c)
		p.push(q, c)
	}
	w := &fakeWriter{ids: map[uint64]bool{recs[0].ID: true, recs[1].ID: true}}
	done := startDrain(q, w)
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	checkInvariant(t, q, &p)
	if got := len(w.snapshot()); got != 28 {
		t.Errorf("%d records written, want the 28 not refused", got)
	}
	_, drop := q.Counts()
	if drop["main.r0"] != 1 || drop["main.r1"] != 1 {
		t.Errorf("dropped %v, want one of each function", drop)
	}
	if lost := q.ErrorsLost(); lost["main.r0"] != 1 || len(lost) != 1 {
		t.Errorf("errors lost %v, want main.r0's refused error record", lost)
	}
	if !strings.Contains(lb.String(), "refused=2") || !strings.Contains(lb.String(), "error_records=1") {
		t.Errorf("refusal not reported:\n%s", lb)
	}
}
