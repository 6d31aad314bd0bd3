// Package queue owns the path from decoded call records to the store: an
// error-first queue with two lanes. Error, panic and unfinished records go
// in the error lane, which is never dropped; ok records go in the ok lane,
// which is bounded in memory and sheds the newest records when full,
// counting every loss per function. One writer goroutine (Drain) takes
// batches, error lane first, and writes them to the store; when the store
// fails (locked, read-only, full), the batch is kept and retried with
// backoff, so nothing already queued is lost while the store recovers.
package queue

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// DefaultOKBytes bounds the memory held by ok records: 64 MiB.
const DefaultOKBytes = 64 << 20

// Writer is the store's write side.
type Writer interface {
	WriteCalls([]record.Call) error
}

// Options tune a Queue.
type Options struct {
	OKBytes    int64         // memory bound of the ok lane; 0: DefaultOKBytes
	BatchSize  int           // records per store transaction; 0: 5000
	FlushEvery time.Duration // longest a record waits for a fuller batch; 0: 200 ms
	Logger     *slog.Logger
	// RetryMin and RetryMax bound the backoff after a failed write; 0: 50 ms and 5 s.
	RetryMin, RetryMax time.Duration
}

// Queue is the two-lane queue. Push may be called from any goroutine;
// Drain runs in exactly one.
type Queue struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	errs     []record.Call
	oks      []record.Call
	okBytes  int64
	closed   bool
	recorded map[string]uint64
	dropped  map[string]uint64
	storeErr error // last write error, nil once writes succeed again
}

// New makes a queue.
func New(opts Options) *Queue {
	if opts.OKBytes <= 0 {
		opts.OKBytes = DefaultOKBytes
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 5000
	}
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = 200 * time.Millisecond
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
	q := &Queue{
		opts:     opts,
		log:      opts.Logger.With("component", "queue"),
		recorded: map[string]uint64{},
		dropped:  map[string]uint64{},
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// recordSize estimates the memory one queued record holds.
func recordSize(c *record.Call) int64 {
	const fixed = 128 // the struct and slice slot
	return fixed + int64(len(c.Error)+len(c.ErrorType))
}

// Push queues one record. Error-lane records are always kept; an ok record
// that does not fit the bound is dropped and counted.
func (q *Queue) Push(c record.Call) {
	q.mu.Lock()
	if c.IsError() {
		q.errs = append(q.errs, c)
	} else {
		sz := recordSize(&c)
		if q.okBytes+sz > q.opts.OKBytes {
			q.dropped[c.Function]++
			q.mu.Unlock()
			return
		}
		q.okBytes += sz
		q.oks = append(q.oks, c)
	}
	n := len(q.errs) + len(q.oks)
	q.mu.Unlock()
	if n >= q.opts.BatchSize {
		q.cond.Signal()
	}
}

// Close says no more records will come. Drain writes what is queued and
// returns.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// take waits for a batch: a full one, or whatever is there after
// FlushEvery, or the rest after Close. The batch may be empty after a
// timeout; done is true once the queue is closed and empty.
func (q *Queue) take(buf []record.Call) (batch []record.Call, done bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	deadline := time.Now().Add(q.opts.FlushEvery)
	for !q.closed && len(q.errs)+len(q.oks) < q.opts.BatchSize {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		// sync.Cond has no timed wait: a timer wakes us.
		t := time.AfterFunc(wait, q.cond.Broadcast)
		q.cond.Wait()
		t.Stop()
	}
	buf = buf[:0]
	n := min(len(q.errs), q.opts.BatchSize)
	buf = append(buf, q.errs[:n]...)
	q.errs = shift(q.errs, n)
	if m := min(len(q.oks), q.opts.BatchSize-n); m > 0 {
		for i := range q.oks[:m] {
			q.okBytes -= recordSize(&q.oks[i])
		}
		buf = append(buf, q.oks[:m]...)
		q.oks = shift(q.oks, m)
	}
	return buf, len(buf) == 0 && q.closed
}

// shift drops the first n elements, releasing the backing array when the
// slice empties so a burst does not pin memory.
func shift(s []record.Call, n int) []record.Call {
	if n == len(s) {
		return nil
	}
	clear(s[:n])
	return s[n:]
}

// Drain writes batches to w until Close and the queue is empty. A failed
// write is retried with backoff until it succeeds; Drain returns the last
// store error only if records remained unwritten when it gave up, which it
// does only after Close and ten consecutive failures.
func (q *Queue) Drain(w Writer) error {
	var buf []record.Call
	for {
		var done bool
		buf, done = q.take(buf)
		if done {
			return nil
		}
		if len(buf) == 0 {
			continue
		}
		if err := q.write(w, buf); err != nil {
			return err
		}
	}
}

func (q *Queue) write(w Writer, batch []record.Call) error {
	backoff := q.opts.RetryMin
	failures := 0
	for {
		err := w.WriteCalls(batch)
		if err == nil {
			q.mu.Lock()
			for i := range batch {
				q.recorded[batch[i].Function]++
			}
			if q.storeErr != nil {
				q.log.Info("store writes resumed")
				q.storeErr = nil
			}
			q.mu.Unlock()
			return nil
		}
		failures++
		q.mu.Lock()
		first := q.storeErr == nil || q.storeErr.Error() != err.Error()
		q.storeErr = err
		closed := q.closed
		q.mu.Unlock()
		if first {
			q.log.Error("store write failed; records are kept and retried", "err", err, "batch", len(batch))
		}
		if closed && failures >= 10 {
			return errors.Join(err, errors.New("gave up writing after the trace ended; unwritten records were counted as dropped"))
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, q.opts.RetryMax)
	}
}

// Counts returns per-function records written and ok records dropped.
func (q *Queue) Counts() (recorded, dropped map[string]uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	recorded = make(map[string]uint64, len(q.recorded))
	for k, v := range q.recorded {
		recorded[k] = v
	}
	dropped = make(map[string]uint64, len(q.dropped))
	for k, v := range q.dropped {
		dropped[k] = v
	}
	return recorded, dropped
}

// StoreError is the last store failure, nil when writes succeed.
func (q *Queue) StoreError() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.storeErr
}
