// Package queue owns a bounded, error-first queue of call records in front
// of one sink (the store, an OTLP endpoint): two lanes, a spill journal, a
// writer goroutine and a per-function loss ledger. It knows nothing of the
// destination: the sink's Writer writes a batch and says what a failure
// means (Writer.Classify), an outage the queue outlasts or records the
// destination refuses.
//
// Error, panic and unfinished records go in the error lane. It is bounded
// in memory (Options.ErrBytes, counting a spill in flight); from half the
// bound on, and whenever the store is failing, its records spill to an
// append-only journal on disk (Options.SpillDir, see journal.go). A record
// that finds the lane full waits for a spill in flight (one fsync). Only
// when the journal can't be written either (disk full, no spill directory)
// and the lane is full is an error record lost: it is counted per
// function (ErrorsLost) and the loss is logged.
//
// Ok records go in the ok lane, which is bounded in memory
// (Options.OKBytes) and sheds the newest records when full, counting every
// loss per function.
//
// One writer goroutine (Drain) writes, in this order: journal segments,
// oldest first, each as one write (the segment file is deleted only after
// the destination took it); then batches from memory, error records first.
// A queue without a journal may have several writers (Options.Writers),
// each writing its own batch, for a destination whose writes wait on a
// round trip (an OTLP endpoint); see drainWorkers.
// When the destination fails (an outage: a store locked, read-only or
// full, a collector down), the batch goes back to its lanes and is retried
// with backoff; with Options.ShedOKWhileFailing its ok records are dropped
// and counted instead, and new ok records are shed until writes succeed.
// Records the destination refuses (Failure.Refused) are written one by one
// and those refused again are dropped and counted. After Close, Drain
// keeps retrying for Options.CloseTimeout; then the ok records still
// unwritten are counted as dropped and the error records are left in the
// journal, which the next run on the same spill directory replays
// (Recover).
//
// For every function, records pushed == recorded + dropped + error records
// still in the journal (SpillCounts), once Drain has returned.
package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// DefaultOKBytes bounds the memory held by ok records: 64 MiB.
const DefaultOKBytes = 64 << 20

// DefaultErrBytes bounds the memory held by error records: 16 MiB.
const DefaultErrBytes = 16 << 20

// DefaultCloseTimeout is how long Drain keeps retrying a failing store
// after Close.
const DefaultCloseTimeout = 30 * time.Second

// journalRetry is how long spilling pauses after the journal failed to
// take a write (the records stay in memory meanwhile).
const journalRetry = time.Second

// Writer is a sink's write side. A failed WriteCalls must write nothing.
// With Options.Writers > 1 its methods are called from several goroutines
// at once.
type Writer interface {
	WriteCalls([]record.Call) error
	// Classify says what a failed WriteCalls means.
	Classify(err error) Failure
}

// Failure is a Writer's reading of one of its errors.
type Failure struct {
	// Refused: the destination refuses these records themselves (an id
	// already stored, a request it rejects as malformed), so writing them
	// again cannot succeed, though other records may. Otherwise the
	// destination is failing (an outage) and the records are retried.
	Refused bool
	// Kind names the kind of failure; each kind is logged once per outage.
	Kind string
	// What says what is wrong, after the destination's name: "is on a
	// full disk", "is unreachable".
	What string
}

// Options tune a Queue.
type Options struct {
	OKBytes int64 // memory bound of the ok lane; 0: DefaultOKBytes
	// ErrBytes bounds the memory held by error records (queued, and being
	// spilled); spilling starts at half of it. 0: DefaultErrBytes.
	ErrBytes int64
	// SpillDir is the journal directory, e.g. "<db>.spill". "" means no
	// journal: error records are then only ever kept in memory, up to
	// ErrBytes; those that don't fit, and those still unwritten when Drain
	// gives up, are lost (and counted).
	SpillDir   string
	BatchSize  int           // records per store transaction and per journal segment; 0: 5000
	FlushEvery time.Duration // longest a record waits for a fuller batch; 0: 200 ms
	// CloseTimeout is how long Drain keeps retrying a failing store after
	// Close; 0: DefaultCloseTimeout.
	CloseTimeout time.Duration
	Logger       *slog.Logger
	// RetryMin and RetryMax bound the backoff after a failed write; 0: 50 ms and 5 s.
	RetryMin, RetryMax time.Duration
	// Name names the destination in log messages, e.g. "store /var/lib/obs.db".
	Name string
	// ShedOKWhileFailing drops ok records (counted) while the destination
	// is failing, instead of keeping them up to OKBytes: for a sink whose
	// ok records are worth little late (live spans), so memory goes to
	// the error records that wait.
	ShedOKWhileFailing bool
	// Writers is how many batches may be written at once, each by its
	// own goroutine: for a destination whose writes mostly wait on a
	// round trip (an OTLP endpoint), so that the next batch is prepared
	// and sent while the destination works on the last. Only a queue
	// without a journal (SpillDir "") has more than one: segments are
	// replayed in order, by one writer. 0: 1.
	Writers int
}

// Queue is the two-lane queue. Push may be called from any goroutine;
// Drain runs in exactly one.
type Queue struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	cond      *sync.Cond
	errs      []record.Call
	errBytes  int64
	oks       lane // in chunks: it grows large when the sink falls behind
	okBytes   int64
	closed    bool
	closedAt  time.Time
	closeCh   chan struct{}
	recorded  map[string]uint64 // written to the store
	dropped   map[string]uint64 // lost: ok records shed, error records that could not be kept
	errLost   map[string]uint64 // the error records among dropped
	spillSize int64             // bytes of the records of a spill in flight
	spilled   map[string]uint64 // error records written to the journal
	journaled map[string]uint64 // error records of this run in the journal now
	storeErr  error             // last write error, nil once writes succeed again
	down      *outage
	inflight  int // batches taken by writers and not yet settled (Writers > 1)

	// The journal. jready counts records in readable segments (including
	// an earlier run's); the writer replays them before taking from memory.
	jr         *journal // nil without SpillDir
	jready     int
	spilling   bool  // a spill is in flight (its records are in neither lane)
	jrDisabled error // the journal can't be opened: no spilling at all
	jrErr      error // last append failure, logged once; nil when it works
	jrRetryAt  time.Time
	lostWarned bool
	recovered  struct{ found, replayed int }

	jmu sync.Mutex // serialises journal I/O; taken before mu, never inside it

	testIdle func() // tests: called when take times out with nothing
	// tests: testFirstGaveUp is called when the first of several writers
	// has given up, before the helpers have stopped; testHelperWrite by a
	// helper before each write.
	testFirstGaveUp, testHelperWrite func()
	// tests: testTimerFired is called by the flush timer before it takes
	// mu; testBeforeWait between arming the timer and waiting (mu held).
	testTimerFired, testBeforeWait func()
}

// outage is one period of failing store writes.
type outage struct {
	start    time.Time
	logged   map[string]bool // failure kinds already logged
	replayed int             // journal records written since it began
}

// New makes a queue. It does no I/O: the journal is opened by Recover,
// by Drain, or by the first spill, whichever comes first.
func New(opts Options) *Queue {
	if opts.OKBytes <= 0 {
		opts.OKBytes = DefaultOKBytes
	}
	if opts.ErrBytes <= 0 {
		opts.ErrBytes = DefaultErrBytes
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 5000
	}
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = 200 * time.Millisecond
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = DefaultCloseTimeout
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 50 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Name == "" {
		opts.Name = "sink"
	}
	if opts.Writers <= 0 || opts.SpillDir != "" {
		opts.Writers = 1
	}
	q := &Queue{
		opts:      opts,
		log:       opts.Logger.With("component", "queue", "sink", opts.Name),
		closeCh:   make(chan struct{}),
		recorded:  map[string]uint64{},
		dropped:   map[string]uint64{},
		errLost:   map[string]uint64{},
		spilled:   map[string]uint64{},
		journaled: map[string]uint64{},
	}
	q.cond = sync.NewCond(&q.mu)
	if opts.SpillDir != "" {
		q.jr = &journal{dir: opts.SpillDir, maxRecs: opts.BatchSize}
	}
	return q
}

// recordSize estimates the memory one queued record holds.
func recordSize(c *record.Call) int64 {
	const fixed = 128 // the struct and slice slot
	return fixed + int64(len(c.Error)+len(c.ErrorType))
}

// Push queues one record. An ok record that does not fit its bound is
// dropped and counted. An error record that does not fit waits for a
// spill in flight; it is lost, and counted, only when the journal can't
// take records (see pushErr).
func (q *Queue) Push(c record.Call) {
	q.mu.Lock()
	q.pushLocked(&c)
	q.wake()
}

// PushAll queues records as Push does each, under one lock. A reader
// hands over what it read from the ring in one go: the lock's cache line
// then moves between the reader's CPU and the writer's once a batch
// rather than once a record, which had made the lock the largest part of
// what queueing a record cost.
func (q *Queue) PushAll(cs []record.Call) {
	q.mu.Lock()
	for i := range cs {
		q.pushLocked(&cs[i])
	}
	q.wake()
}

// pushLocked queues c (a copy of it). Called with mu held; an error
// record may wait for a spill (pushErr).
func (q *Queue) pushLocked(c *record.Call) {
	if c.IsError() {
		q.pushErr(c)
		return
	}
	sz := recordSize(c)
	if q.okBytes+sz > q.opts.OKBytes || (q.opts.ShedOKWhileFailing && q.storeErr != nil) {
		q.dropped[c.Function]++
		return
	}
	q.okBytes += sz
	q.oks.push(c)
}

// wake unlocks mu and, when a batch is ready, wakes a writer.
func (q *Queue) wake() {
	n := len(q.errs) + q.oks.len()
	q.mu.Unlock()
	if n >= q.opts.BatchSize {
		if q.opts.Writers > 1 {
			// The one woken by Signal might be a helper parked on an
			// outage, which would go back to sleep with the batch.
			q.cond.Broadcast()
		} else {
			q.cond.Signal()
		}
	}
}

// pushErr adds an error record to its lane, spilling the lane to make
// room. While the journal takes writes, the caller waits for the spill in
// flight (one fsync; the kernel ring buffers the records meanwhile) rather
// than lose the record. When the journal can't be used and the lane is at
// its bound, the record is lost: counted per function, and logged once.
// Called with mu held; it may release it while waiting.
func (q *Queue) pushErr(c *record.Call) {
	sz := recordSize(c)
	// A record larger than the whole bound is taken into an empty lane.
	for q.errBytes+q.spillSize+sz > q.opts.ErrBytes && q.errBytes+q.spillSize > 0 {
		q.kickSpill()
		if !q.spilling {
			q.dropped[c.Function]++
			q.errLost[c.Function]++
			if !q.lostWarned {
				q.lostWarned = true
				why := "there is no spill directory"
				switch {
				case q.jrDisabled != nil:
					why = fmt.Sprintf("the spill journal can't be used (%v)", q.jrDisabled)
				case q.jrErr != nil:
					why = fmt.Sprintf("the spill journal can't be written (%v)", q.jrErr)
				}
				q.log.Error("error records are being lost: the error lane is full and "+why+"; each lost record is counted per function and reported at the end",
					"bound_bytes", q.opts.ErrBytes, "in_memory", len(q.errs), "store_err", q.storeErr)
			}
			return
		}
		q.cond.Wait()
	}
	q.errs = append(q.errs, *c)
	q.errBytes += sz
	q.kickSpill()
}

// Close says no more records will come. Drain writes what is queued and
// returns; if the store is failing, it gives up after CloseTimeout.
func (q *Queue) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		q.closedAt = time.Now()
		close(q.closeCh)
	}
	q.mu.Unlock()
	q.cond.Broadcast()
}

// wantSpill reports whether the error lane should go to the journal now:
// it is over its bound or the store is failing. Called with mu held.
func (q *Queue) wantSpill() bool {
	if q.jr == nil || q.jrDisabled != nil || len(q.errs) == 0 {
		return false
	}
	if q.errBytes <= q.opts.ErrBytes/2 && q.storeErr == nil {
		return false
	}
	return q.jrErr == nil || !time.Now().Before(q.jrRetryAt)
}

// kickSpill starts the spiller when there is work and none runs. Called
// with mu held.
func (q *Queue) kickSpill() {
	if !q.spilling && q.wantSpill() {
		q.spilling = true
		go q.spill()
	}
}

// spill moves the whole error lane, oldest first, to the journal, with one
// fsync, and ends: the next Push or failed write starts another. Records
// that can't be written go back to the front of the lane.
func (q *Queue) spill() {
	q.mu.Lock()
	if !q.wantSpill() {
		q.spilling = false
		q.mu.Unlock()
		q.cond.Broadcast()
		return
	}
	recs := q.errs
	q.errs, q.spillSize, q.errBytes = nil, q.errBytes, 0
	q.mu.Unlock()

	q.jmu.Lock()
	n, err := q.journalAppend(recs)
	q.jmu.Unlock()

	q.mu.Lock()
	q.noteSpilled(recs[:n])
	if err != nil {
		q.requeueErrs(recs[n:])
		q.journalFailed(err)
	} else if q.jrErr != nil {
		q.log.Info("spill journal is writable again", "dir", q.opts.SpillDir)
		q.jrErr = nil
	}
	q.spilling, q.spillSize = false, 0
	q.mu.Unlock()
	q.cond.Broadcast()
}

// journalAppend opens the journal if need be and appends recs. Called with
// jmu held.
func (q *Queue) journalAppend(recs []record.Call) (int, error) {
	if err := q.openJournal(); err != nil {
		return 0, err
	}
	return q.jr.appendRecords(recs)
}

// noteSpilled counts records made durable in the journal. Called with mu held.
func (q *Queue) noteSpilled(recs []record.Call) {
	for i := range recs {
		q.spilled[recs[i].Function]++
		q.journaled[recs[i].Function]++
	}
	q.jready += len(recs)
}

// requeueErrs puts error records back at the front of their lane.
func (q *Queue) requeueErrs(recs []record.Call) {
	if len(recs) == 0 {
		return
	}
	all := make([]record.Call, 0, len(recs)+len(q.errs))
	all = append(append(all, recs...), q.errs...)
	q.errs = all
	for i := range recs {
		q.errBytes += recordSize(&recs[i])
	}
}

// requeueOKs puts ok records back at the front of their lane. They were
// accepted once, so they are kept even past the bound; new ones are shed.
func (q *Queue) requeueOKs(recs []record.Call) {
	if len(recs) == 0 {
		return
	}
	q.oks.pushFront(recs)
	for i := range recs {
		q.okBytes += recordSize(&recs[i])
	}
}

// journalFailed notes a failed append: the records stay in memory and
// spilling pauses for journalRetry. Logged once until the journal works
// again. Called with mu held.
func (q *Queue) journalFailed(err error) {
	if q.jrDisabled != nil {
		return
	}
	if q.jrErr == nil {
		q.log.Error("cannot write the spill journal: error records are kept in memory instead, up to bound_bytes (past it they are lost and counted); spilling is retried",
			"dir", q.opts.SpillDir, "bound_bytes", q.opts.ErrBytes, "in_memory", len(q.errs), "err", err)
	}
	q.jrErr = err
	q.jrRetryAt = time.Now().Add(journalRetry)
}

// Recover opens the spill journal and registers the records an earlier run
// left in it (after a crash, or after giving up on a failing store),
// truncating a torn last record and logging what was cut. Drain replays
// these records before anything else. Drain calls Recover itself; call it
// earlier to learn the count. It returns the number of records found and
// is idempotent. Without SpillDir it does nothing.
func (q *Queue) Recover() (int, error) {
	if q.jr == nil {
		return 0, nil
	}
	q.jmu.Lock()
	err := q.openJournal()
	q.jmu.Unlock()
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.recovered.found, err
}

// openJournal opens the journal once, logs what recovery found and counts
// the records. Called with jmu held.
func (q *Queue) openJournal() error {
	if q.jr.opened {
		return q.jr.openErr
	}
	notes, err := q.jr.open()
	for _, n := range notes {
		if n.setAside != "" {
			q.log.Error("spill journal: a file that is not a journal segment was moved aside; its records (if any) are not replayed",
				"file", n.path, "moved_to", n.setAside, "reason", n.reason)
			continue
		}
		q.log.Warn("spill journal: torn record found after a crash and truncated; the intact records before it are replayed",
			"file", n.path, "intact_records", n.intact, "offset", n.offset, "bytes_cut", n.dropped, "reason", n.reason)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		q.jrDisabled = err
		q.log.Error("spill journal can't be used: error records are kept in memory only, up to bound_bytes (past it they are lost and counted)", "dir", q.opts.SpillDir, "bound_bytes", q.opts.ErrBytes, "err", err)
		return err
	}
	found := 0
	for _, s := range q.jr.segs {
		found += s.n
	}
	q.recovered.found = found
	q.jready += found
	if found > 0 {
		q.log.Info("spill journal holds error records from an earlier run; they are written to the store first",
			"dir", q.opts.SpillDir, "records", found)
	}
	return nil
}

// take waits for a batch: a full one, or whatever is there after
// FlushEvery (at once when !wait), or the rest after Close. It returns an
// empty batch at once when the journal has records, which go first, and
// waits out a spill in flight, so error records keep their order. done is
// true once the queue is closed and every lane and the journal are empty
// (and, with several writers, no other writer's batch is in flight: a
// failed one comes back to the lanes).
//
// A helper (a writer other than the first, Writers > 1) takes nothing
// while the destination is failing: the first writer alone retries, with
// its back-off, and the helpers resume when a write succeeds. A helper's
// done is true once the queue is closed and it has nothing to take, or
// the destination is failing: what is left is the first writer's.
func (q *Queue) take(buf []record.Call, wait, helper bool) (batch []record.Call, done bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	deadline := time.Now().Add(q.opts.FlushEvery)
	for {
		if q.jready > 0 {
			return buf[:0], false
		}
		if q.spilling {
			q.cond.Wait() // one fsync; its records land in the journal
			continue
		}
		n := len(q.errs) + q.oks.len()
		if helper && (q.storeErr != nil || (q.closed && n == 0)) {
			if q.closed {
				return buf[:0], true
			}
			q.cond.Wait() // woken when a write succeeds, or on Close
			continue
		}
		if q.closed && n == 0 && q.inflight > 0 {
			q.cond.Wait() // woken when a batch in flight settles
			continue
		}
		if q.closed || n >= q.opts.BatchSize || (!wait && n > 0) {
			break
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		// sync.Cond has no timed wait: a timer wakes us. The timer takes
		// mu before it broadcasts: the waiter holds mu from arming the
		// timer until Wait has registered it, so the wakeup can't fall in
		// between and be lost (a timer that fired first, broadcasting to
		// nobody, left Drain asleep until the next Push: a lone error
		// record waited for traffic that might never come).
		t := time.AfterFunc(left, q.flushTimer)
		if q.testBeforeWait != nil {
			q.testBeforeWait()
		}
		q.cond.Wait()
		t.Stop()
	}
	buf = buf[:0]
	n := min(len(q.errs), q.opts.BatchSize)
	buf = append(buf, q.errs[:n]...)
	for i := range q.errs[:n] {
		q.errBytes -= recordSize(&q.errs[i])
	}
	q.errs = shift(q.errs, n, 2*q.opts.BatchSize)
	if m := min(q.oks.len(), q.opts.BatchSize-n); m > 0 {
		from := len(buf)
		buf = q.oks.take(buf, m)
		for i := range buf[from:] {
			q.okBytes -= recordSize(&buf[from+i])
		}
	}
	if len(buf) > 0 && q.opts.Writers > 1 {
		q.inflight++
	}
	if len(buf) == 0 && !q.closed && q.testIdle != nil {
		q.testIdle()
	}
	// Empty and closed: the lanes are empty, no spill is in flight and
	// the journal has nothing readable.
	return buf, len(buf) == 0 && q.closed
}

// flushTimer wakes take when FlushEvery has passed.
func (q *Queue) flushTimer() {
	if q.testTimerFired != nil {
		q.testTimerFired()
	}
	q.mu.Lock()
	q.cond.Broadcast()
	q.mu.Unlock()
}

// shift drops the first n elements. While the array is at most keep
// records long, the rest move to its front and the array is kept, so the
// lane's next records go into it: a lane that only ever advanced its
// start ran off its array's end again and again, and every append there
// copied the lane into a new array (over 500 bytes allocated and copied
// per record in BenchmarkPushDrain). An array that a burst grew past keep
// is let go once the lane empties, so the burst does not pin memory.
func shift(s []record.Call, n, keep int) []record.Call {
	clear(s[:n])
	rest := len(s) - n
	if cap(s) <= keep {
		copy(s, s[n:])
		clear(s[rest:])
		return s[:rest]
	}
	if rest == 0 {
		return nil
	}
	return s[n:]
}

// Drain writes to w until Close and every lane and the journal are empty:
// first it recovers the journal an earlier run left (Recover), then it
// replays journal segments, oldest first, and writes batches from memory,
// error records first. A failed write is retried with backoff. After Close
// it retries for at most CloseTimeout; it then counts the ok records still
// unwritten as dropped, moves the error records to the journal, and returns
// an error that says how many wait there. With Options.Writers > 1, w's
// WriteCalls is called from that many goroutines at once.
func (q *Queue) Drain(w Writer) error {
	if q.jr != nil {
		q.Recover() // logged; without a journal errors stay in memory
	}
	if q.opts.Writers > 1 {
		return q.drainWorkers(w)
	}
	if err := q.writeLoop(w, false); err != nil {
		return q.giveUp(err)
	}
	q.closeJournal()
	return nil
}

// drainWorkers is Drain with several writers. Each takes its own batch,
// error records first, and settles it (counted written, counted dropped,
// or back in its lanes) before it takes another. The first writer is the
// one that retries an outage and gives up after Close; the helpers stop
// taking while the destination fails (see take). The queue gives up only
// once every helper has stopped, so no batch is in flight when the
// records left are counted: the ledger stays exact.
func (q *Queue) drainWorkers(w Writer) error {
	var wg sync.WaitGroup
	for range q.opts.Writers - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.writeLoop(w, true) //nolint:errcheck // a helper never gives up
		}()
	}
	err := q.writeLoop(w, false)
	if err != nil && q.testFirstGaveUp != nil {
		q.testFirstGaveUp()
	}
	wg.Wait()
	if err != nil {
		q.mu.Lock()
		left := len(q.errs) + q.oks.len()
		recovered := q.storeErr == nil
		q.mu.Unlock()
		if left > 0 || !recovered {
			return q.giveUp(err)
		}
		// A helper's write succeeded after the first writer gave up
		// and the helpers wrote the rest.
	}
	q.closeJournal()
	return nil
}

// writeLoop is one writer: it takes batches (from the journal first, for
// the only writer) and writes them until the queue is closed and empty;
// then it returns nil. The first writer (!helper) retries a failing
// destination with backoff and returns the last error once CloseTimeout
// has passed after Close; a helper leaves retrying to it.
func (q *Queue) writeLoop(w Writer, helper bool) error {
	var buf []record.Call
	backoff := q.opts.RetryMin
	retrying := false
	for {
		var seg *segment
		var batch []record.Call
		if !helper {
			seg, batch = q.nextSegment()
		}
		if seg == nil {
			var done bool
			buf, done = q.take(buf, !retrying, helper)
			if done {
				return nil
			}
			if len(buf) == 0 {
				continue
			}
			batch = buf
		}
		if helper && q.testHelperWrite != nil {
			q.testHelperWrite()
		}
		err := q.write(w, seg, batch)
		if seg == nil {
			q.settle()
		}
		if err == nil {
			retrying, backoff = false, q.opts.RetryMin
			continue
		}
		if helper {
			continue // take waits until the first writer's retry succeeds
		}
		retrying = true
		if q.closeExpired() {
			return err
		}
		q.sleep(backoff)
		backoff = min(backoff*2, q.opts.RetryMax)
	}
}

// write writes one batch (a journal segment's when seg is set) and
// settles its records: counted as written, refused records counted as
// dropped, and on failure the rest back in their lanes (failed). It
// returns the failure, nil when every record is settled.
func (q *Queue) write(w Writer, seg *segment, batch []record.Call) error {
	err := w.WriteCalls(batch)
	if err == nil {
		q.committed(seg, batch)
		return nil
	}
	if w.Classify(err).Refused {
		// Not an outage: the destination refuses some of these
		// records (after a crash between a commit and a segment's
		// deletion, the store holds them already: duplicate ids).
		// Write them one by one so refused records can't block the
		// others.
		var rest []record.Call
		if rest, err = q.writeSingly(w, seg, batch); err == nil {
			if seg != nil {
				q.committed(seg, nil)
			} else {
				q.resumed()
			}
			return nil
		}
		if seg == nil {
			batch = rest // the others are written or counted
		}
	}
	q.failed(w.Classify(err), err, seg, batch)
	return err
}

// settle ends a batch taken from memory (with several writers): its
// records are counted or back in their lanes, so a writer waiting for the
// batches in flight may look again.
func (q *Queue) settle() {
	if q.opts.Writers == 1 {
		return
	}
	q.mu.Lock()
	q.inflight--
	q.mu.Unlock()
	q.cond.Broadcast()
}

// nextSegment returns the oldest readable journal segment and its records,
// or nil. Records lost to damage in a segment this run wrote are counted
// as dropped; an unreadable segment is left on disk and skipped.
func (q *Queue) nextSegment() (*segment, []record.Call) {
	q.mu.Lock()
	ready := q.jready
	q.mu.Unlock()
	if ready == 0 {
		return nil, nil
	}
	q.jmu.Lock()
	defer q.jmu.Unlock()
	for {
		s, recs, note, err := q.jr.oldest()
		if s == nil {
			q.mu.Lock()
			if q.jready != 0 {
				// Never expected: don't spin on a count with no segment.
				q.log.Error("spill journal: record count out of step with the segments; resetting it", "count", q.jready)
				q.jready = 0
			}
			q.mu.Unlock()
			return nil, nil
		}
		if err != nil {
			q.mu.Lock()
			q.jready -= s.n
			q.mu.Unlock()
			q.log.Error("spill journal segment can't be read: it is left on disk and skipped; its records are not in the store",
				"file", s.path, "records", s.n, "err", err)
			continue
		}
		if s.done != nil {
			recs = slices.DeleteFunc(recs, func(c record.Call) bool { return s.done[c.ID] })
		}
		if note == nil {
			return s, recs
		}
		// The segment reads back shorter than written: count what's gone.
		lost := map[string]uint64{}
		for f, n := range s.funcs {
			lost[f] = n
		}
		for i := range recs {
			lost[recs[i].Function]--
		}
		q.mu.Lock()
		for f, n := range lost {
			if n == 0 {
				continue
			}
			if s.recovered {
				q.recovered.found -= int(n)
			} else {
				q.journaled[f] -= n
				q.dropped[f] += n
				q.errLost[f] += n
			}
		}
		q.jready -= s.n - len(recs)
		q.mu.Unlock()
		q.log.Error("spill journal segment is damaged: the records after the damage are lost",
			"file", note.path, "intact_records", len(recs), "lost_records", s.n-len(recs), "offset", note.offset, "reason", note.reason)
		s.n = len(recs)
		s.funcs = map[string]uint64{}
		for i := range recs {
			s.funcs[recs[i].Function]++
		}
		if len(recs) > 0 {
			return s, recs
		}
		if err := q.jr.remove(s); err != nil {
			q.log.Error("spill journal: remove empty segment", "err", err)
		}
	}
}

// committed counts a batch the store has committed and, for a journal
// segment, deletes the segment.
func (q *Queue) committed(seg *segment, batch []record.Call) {
	if seg != nil {
		q.jmu.Lock()
		err := q.jr.remove(seg)
		q.jmu.Unlock()
		if err != nil {
			q.log.Error("spill journal: the store has the segment's records but the segment can't be deleted; delete it by hand, or the next run replays it again",
				"file", seg.path, "err", err)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case seg == nil:
		countRuns(q.recorded, batch)
	case seg.recovered:
		q.jready -= len(batch)
		q.recovered.replayed += len(batch)
		if q.recovered.replayed == q.recovered.found {
			q.log.Info("replayed the error records an earlier run left in the spill journal", "records", q.recovered.replayed)
		}
	default:
		q.jready -= len(batch)
		for i := range batch {
			q.recorded[batch[i].Function]++
			q.journaled[batch[i].Function]--
		}
	}
	if q.down == nil {
		return
	}
	q.storeErr = nil
	q.cond.Broadcast() // helpers parked on the outage (Writers > 1)
	if seg != nil {
		q.down.replayed += len(batch)
	}
	q.endOutage()
}

// countRuns adds batch's records to m, per function, with one map update
// per run of records of the same function rather than one per record: a
// flood's batch is a few long runs, and hashing the name of each of its
// records was a measurable part of a sink's cost per record.
func countRuns(m map[string]uint64, batch []record.Call) {
	for i := 0; i < len(batch); {
		f, j := batch[i].Function, i+1
		for j < len(batch) && batch[j].Function == f {
			j++
		}
		m[f] += uint64(j - i)
		i = j
	}
}

// resumed notes a write that succeeded.
func (q *Queue) resumed() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.storeErr = nil
	q.cond.Broadcast() // helpers parked on the outage (Writers > 1)
	q.endOutage()
}

// endOutage ends the outage once the journal is replayed. Called with mu
// held.
func (q *Queue) endOutage() {
	if q.down != nil && q.jready == 0 {
		q.log.Info(fmt.Sprintf("%s: writes resumed (replayed %d spilled records)", q.opts.Name, q.down.replayed),
			"down_for", time.Since(q.down.start).Round(time.Millisecond))
		q.down = nil
	}
}

// writeSingly writes records one at a time after the destination refused
// their batch: those it refuses again (in practice, for the store: already
// stored before a crash) are counted as dropped and reported. Any other
// failure stops it; it returns that error and the records not yet written
// (a journal segment's written records are marked done, so they are not
// written again).
func (q *Queue) writeSingly(w Writer, seg *segment, recs []record.Call) (rest []record.Call, err error) {
	if seg != nil && seg.done == nil {
		seg.done = map[uint64]bool{}
	}
	var refused []record.Call
	var firstErr error
	defer func() {
		if len(refused) == 0 {
			return
		}
		from := "a batch"
		if seg != nil {
			from = "the spill journal segment " + seg.path
		}
		q.log.Error("the destination refused records of "+from+"; they are counted as dropped (for the store, a duplicate id means the record was already stored before a crash)",
			"refused", len(refused), "error_records", countErrors(refused), "first_id", refused[0].ID, "err", firstErr)
	}()
	for i := range recs {
		c := recs[i : i+1]
		err := w.WriteCalls(c)
		if err != nil && !w.Classify(err).Refused {
			return recs[i:], err
		}
		if seg != nil {
			seg.done[c[0].ID] = true
		}
		q.mu.Lock()
		q.noteSingle(seg, &c[0], err == nil)
		q.mu.Unlock()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			refused = append(refused, c[0])
		}
	}
	return nil, nil
}

// noteSingle counts one record written (ok) or refused by writeSingly.
// Called with mu held.
func (q *Queue) noteSingle(seg *segment, c *record.Call, ok bool) {
	if seg != nil {
		q.jready--
	}
	switch {
	case seg == nil && ok:
		q.recorded[c.Function]++
	case seg == nil:
		q.dropped[c.Function]++
		if c.IsError() {
			q.errLost[c.Function]++
		}
	case ok && seg.recovered:
		q.recovered.replayed++
	case ok:
		q.recorded[c.Function]++
		q.journaled[c.Function]--
	case seg.recovered:
		q.recovered.found--
	default:
		q.journaled[c.Function]--
		q.dropped[c.Function]++
		q.errLost[c.Function]++
	}
}

func countErrors(recs []record.Call) int {
	n := 0
	for i := range recs {
		if recs[i].IsError() {
			n++
		}
	}
	return n
}

// failed handles a failed write: a batch from memory goes back to its
// lanes (a journal segment just stays on disk; with ShedOKWhileFailing its
// ok records are dropped and counted), the failure is logged once per
// kind, and the error lane starts spilling.
func (q *Queue) failed(f Failure, err error, seg *segment, batch []record.Call) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if seg == nil {
		n := 0
		for n < len(batch) && batch[n].IsError() {
			n++
		}
		q.requeueErrs(batch[:n])
		if q.opts.ShedOKWhileFailing {
			for i := range batch[n:] {
				q.dropped[batch[n+i].Function]++
			}
		} else {
			q.requeueOKs(batch[n:])
		}
	}
	q.storeErr = err
	if q.down == nil {
		q.down = &outage{start: time.Now(), logged: map[string]bool{}}
	}
	if !q.down.logged[f.Kind] {
		q.down.logged[f.Kind] = true
		q.log.Error(q.failureMessage(f), "err", err)
	}
	q.kickSpill()
}

// failureMessage says what is wrong and what happens to the records; the
// error it is logged with says what to do.
func (q *Queue) failureMessage(f Failure) string {
	what := f.What
	if what == "" {
		what = "can't be written"
	}
	var errs string
	switch {
	case q.jr == nil:
		errs = fmt.Sprintf("error records are kept in memory up to %d bytes", q.opts.ErrBytes)
		if q.opts.SpillDir == "" {
			errs += " (no spill directory)"
		}
	case q.jrDisabled != nil:
		errs = fmt.Sprintf("error records are kept in memory up to %d bytes (the spill journal can't be used)", q.opts.ErrBytes)
	default:
		n := 0
		for _, v := range q.spilled {
			n += int(v)
		}
		errs = "error records are spilling to " + q.opts.SpillDir
		if n > 0 {
			errs += fmt.Sprintf(" (%d so far)", n)
		}
	}
	oks := fmt.Sprintf("ok records are kept up to %d bytes, then shed and counted", q.opts.OKBytes)
	if q.opts.ShedOKWhileFailing {
		oks = "ok records are dropped and counted until it works again"
	}
	return fmt.Sprintf("%s %s: %s; %s; writing resumes by itself once it accepts writes",
		q.opts.Name, what, errs, oks)
}

func (q *Queue) closeExpired() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed && time.Since(q.closedAt) >= q.opts.CloseTimeout
}

// sleep waits d, cut short by Close; after Close it never waits past the
// close deadline.
func (q *Queue) sleep(d time.Duration) {
	q.mu.Lock()
	closed, at := q.closed, q.closedAt
	q.mu.Unlock()
	if closed {
		d = min(d, time.Until(at.Add(q.opts.CloseTimeout)))
		if d <= 0 {
			return
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	if closed {
		<-t.C
		return
	}
	select {
	case <-t.C:
	case <-q.closeCh:
	}
}

// giveUp ends Drain on a store that is still failing after CloseTimeout:
// ok records still unwritten are dropped and counted, error records go to
// the journal for the next run. Only error records that can't be journaled
// either are lost; they are counted as dropped and reported.
func (q *Queue) giveUp(storeErr error) error {
	q.mu.Lock()
	for q.spilling {
		q.cond.Wait()
	}
	okLost := q.oks.len()
	q.oks.each(func(c *record.Call) { q.dropped[c.Function]++ })
	q.oks.reset()
	q.okBytes = 0
	errs := q.errs
	q.errs, q.errBytes = nil, 0
	q.spilling = true // keeps any late spiller out
	q.mu.Unlock()

	var jerr error
	n := 0
	if len(errs) > 0 {
		if q.jr == nil {
			jerr = errors.New("no spill directory")
		} else {
			q.jmu.Lock()
			n, jerr = q.journalAppend(errs)
			q.jmu.Unlock()
		}
	}
	q.closeJournal()

	q.mu.Lock()
	defer q.mu.Unlock()
	q.spilling = false
	q.cond.Broadcast()
	q.noteSpilled(errs[:n])
	lost := errs[n:]
	for i := range lost {
		q.dropped[lost[i].Function]++
		q.errLost[lost[i].Function]++
	}
	waiting := q.jready
	msg := fmt.Sprintf("%s still failing %s after the trace ended: ", q.opts.Name, q.opts.CloseTimeout)
	if waiting > 0 {
		msg += fmt.Sprintf("%d error records are waiting in the spill journal %s and are written by the next obs-agent run on the same spill directory; ", waiting, q.opts.SpillDir)
	}
	if len(lost) > 0 {
		msg += fmt.Sprintf("%d error records could not be kept and are lost (%v); ", len(lost), jerr)
	}
	msg += fmt.Sprintf("%d ok records were dropped", okLost)
	return fmt.Errorf("queue: %s: %w", msg, storeErr)
}

func (q *Queue) closeJournal() {
	if q.jr == nil {
		return
	}
	q.jmu.Lock()
	q.jr.close()
	q.jmu.Unlock()
}

// Counts returns per-function records written and records dropped (ok
// records shed, and error records that could not be kept at all).
func (q *Queue) Counts() (recorded, dropped map[string]uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return clone(q.recorded), clone(q.dropped)
}

// ErrorsLost returns per function the error records that could not be
// kept at all: the error lane was full while the journal could not take
// them, or the store and the journal both still failed when Drain gave up,
// or a journal segment this run wrote was damaged. They are also in the
// dropped counts of Counts.
func (q *Queue) ErrorsLost() map[string]uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return clone(q.errLost)
}

// SpillCounts returns per function the error records written to the
// journal (cumulative) and those of this run still in it, not yet in the
// store.
func (q *Queue) SpillCounts() (spilled, journaled map[string]uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j := make(map[string]uint64, len(q.journaled))
	for k, v := range q.journaled {
		if v > 0 {
			j[k] = v
		}
	}
	return clone(q.spilled), j
}

// Recovered returns how many records an earlier run left in the journal
// and how many of them have been written to the store.
func (q *Queue) Recovered() (found, replayed int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.recovered.found, q.recovered.replayed
}

func clone(m map[string]uint64) map[string]uint64 {
	c := make(map[string]uint64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// StoreError is the last store failure, nil when writes succeed.
func (q *Queue) StoreError() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.storeErr
}

// Depth returns the records waiting for the store: error and ok records in
// memory, and error records in the spill journal (an earlier run's
// included).
func (q *Queue) Depth() (errs, oks, journal int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.errs), q.oks.len(), q.jready
}
