package agent

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/obs-agent/obs-agent/internal/metrics"
	"github.com/obs-agent/obs-agent/internal/otlp"
	"github.com/obs-agent/obs-agent/internal/queue"
	"github.com/obs-agent/obs-agent/internal/record"
)

// OTLPOptions configure the live OTLP sink (--otlp-endpoint).
type OTLPOptions struct {
	// Exporter is the endpoint, headers, CA file and request timeout.
	// Its MaxElapsed bounds the retries of one request inside the
	// exporter (0: otlpRetryFor); past it the sink's queue retries with
	// its own back-off.
	Exporter otlp.Config
	// ServiceName is service.name; "" means the traced binary's name.
	ServiceName string
	// Version is the instrumentation scope's version.
	Version string
	// Hold bounds how long a span may wait for its parent's record to
	// learn its trace (0: DefaultRootHold); see rootResolver.
	Hold time.Duration
	// CloseTimeout is how long the sink keeps retrying a failing endpoint
	// after the trace ended (0: DefaultOTLPCloseTimeout).
	CloseTimeout time.Duration
	// OKBytes and ErrBytes bound the sink's queue (0: its shares of the
	// memory budget, see planBudget).
	OKBytes, ErrBytes int64
	// Requests is how many export requests may be in flight at once
	// (0: DefaultOTLPRequests).
	Requests int
}

// Defaults of the OTLP sink.
const (
	// DefaultRootHold is how long a span waits for the record of an
	// ancestor that is still running. Calls return before their callers,
	// so a call's record comes before its parent's; the trace id is that
	// of the tree's root, which is known once the chain up to a root has
	// been seen.
	DefaultRootHold = 2 * time.Second
	// DefaultOTLPCloseTimeout bounds the wait for a failing endpoint at
	// the end of the trace.
	DefaultOTLPCloseTimeout = 10 * time.Second
	otlpSinkName            = "otlp"
	otlpBatch               = 2048
	// DefaultOTLPRequests is how many export requests may be in flight
	// at once. With one, the sink sat idle during every round trip while
	// the receiver decoded, and the receiver while the sink encoded: a
	// flood outran it (45% of ok spans shed). See docs/otlp.md for the
	// figures behind the number.
	DefaultOTLPRequests = 3
	otlpRetryFor        = 5 * time.Second
	// rootMemo is the number of slots of the call → root memo (16 bytes
	// each), and maxHeld bounds the spans waiting for an ancestor.
	rootMemo = 1 << 16
	maxHeld  = 1 << 13
)

// otlpSink sends every record as one span (internal/otlp's mapping, so the
// ids equal those of `obs-agent export otlp`). A resolver in front of its
// queue gives each record its trace root; the queue sheds ok records while
// the endpoint is failing (counted) and keeps error records, bounded in
// memory, until it accepts them again.
type otlpSink struct {
	*queueSink
	res      *rootResolver
	w        *otlpWriter
	stop     chan struct{}
	loopDone chan struct{}
	started  bool // start ran: the expiry loop must be stopped
	once     sync.Once
}

func (s *session) newOTLPSink(o OTLPOptions) (*otlpSink, error) {
	cfg := o.Exporter
	if cfg.MaxElapsed == 0 {
		cfg.MaxElapsed = otlpRetryFor
	}
	if cfg.InitialBackoff == 0 {
		cfg.InitialBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = time.Second
	}
	cfg.QuietRetries = true // the queue logs the outage, once
	exp, err := otlp.New(cfg)
	if err != nil {
		return nil, err
	}
	proc := otlp.ProcessOf(s.sess, o.ServiceName)
	requests := cmp.Or(o.Requests, DefaultOTLPRequests)
	w := &otlpWriter{exp: exp, encs: make(chan *otlp.Encoder, requests)}
	for range requests {
		w.encs <- otlp.NewEncoder(&proc, o.Version)
	}
	k := &otlpSink{w: w, stop: make(chan struct{}), loopDone: make(chan struct{})}
	k.queueSink = newQueueSink(otlpSinkName, w, queue.Options{
		OKBytes:            cmp.Or(o.OKBytes, s.budget.OTLPOKLane),
		ErrBytes:           cmp.Or(o.ErrBytes, s.budget.OTLPErrLane),
		BatchSize:          otlpBatch,
		CloseTimeout:       cmp.Or(o.CloseTimeout, DefaultOTLPCloseTimeout),
		ShedOKWhileFailing: true,
		Writers:            requests,
		Logger:             s.log,
		Name:               "otlp endpoint " + exp.Endpoint(),
	})
	k.res = newRootResolver(cmp.Or(o.Hold, DefaultRootHold), k.queueSink.Push)
	s.log.Info("sending spans over OTLP", "endpoint", exp.Endpoint(), "service", proc.ServiceName)
	return k, nil
}

func (k *otlpSink) start() {
	k.queueSink.start()
	k.started = true
	go func() {
		defer close(k.loopDone)
		t := time.NewTicker(k.res.hold / 4)
		defer t.Stop()
		for {
			select {
			case <-k.stop:
				return
			case now := <-t.C:
				k.res.expire(now, false)
			}
		}
	}()
}

func (k *otlpSink) Push(c record.Call) { k.res.add(c) }

// Close releases every span still waiting for an ancestor (no more
// records come: the ancestors' records, if any, have arrived) and closes
// the queue.
func (k *otlpSink) Close() {
	k.once.Do(func() {
		close(k.stop)
		if k.started {
			<-k.loopDone
		}
		k.res.expire(time.Now(), true)
		k.queueSink.Close()
	})
}

func (k *otlpSink) Wait() error {
	err := k.queueSink.Wait()
	k.w.exp.Close()
	return err
}

func (k *otlpSink) Health() metrics.Sink {
	h := k.queueSink.Health()
	h.Queue = append(h.Queue, metrics.Depth{Lane: "awaiting_parent", Records: k.res.held()})
	return h
}

func (k *otlpSink) Ledger() Ledger {
	l := k.queueSink.Ledger()
	l.Rejected = k.w.rejected.Load()
	return l
}

// otlpWriter turns a batch of records into one export request, encoded
// straight to the wire format (otlp.Encoder: the same spans as
// `export otlp`'s, without its per-span allocations). The queue calls it
// from OTLPOptions.Requests writers at once; each takes an encoder of its
// own.
type otlpWriter struct {
	exp      *otlp.Exporter
	encs     chan *otlp.Encoder // one per writer: never waited for
	rejected atomic.Uint64
}

func (w *otlpWriter) WriteCalls(calls []record.Call) error {
	enc := <-w.encs
	defer func() { w.encs <- enc }()
	enc.Reset()
	for i := range calls {
		c := &calls[i]
		root := c.TraceRoot
		if root == 0 {
			root = c.ID
		}
		enc.Add(c, root)
	}
	body := enc.Bytes()
	if w.exp.Gzip() {
		// The encoder's own gzip, which knows the spans' layout: about
		// half the CPU of a general compressor (otlp.BenchmarkGzip).
		body = enc.Gzipped()
	}
	res, err := w.exp.ExportBody(context.Background(), body)
	if err != nil {
		return err
	}
	if res.Rejected > 0 {
		// The receiver took the request but dropped some spans (partial
		// success); it does not say which, so they are counted apart.
		w.rejected.Add(uint64(res.Rejected))
	}
	return nil
}

// Classify: a refusal (a 4xx other than 429, a certificate that is not
// trusted) can't be fixed by sending the same spans again; anything else
// is the endpoint being down or overloaded.
func (w *otlpWriter) Classify(err error) queue.Failure {
	var perm *otlp.PermanentError
	if errors.As(err, &perm) {
		return queue.Failure{Refused: true, Kind: "refused", What: "refuses the spans"}
	}
	return queue.Failure{Kind: "down", What: "is unreachable or failing"}
}

// rootResolver gives each record its trace root before it is queued. A
// call's record comes when it returns, before its caller's, so a record
// whose parent is not yet known waits (held) until the parent's record
// arrives and names the root, and is then released with it, its own
// waiting descendants too. A record waits at most hold, and at most
// maxHeld records wait: past that the oldest are released with their
// nearest unseen ancestor as root (a provisional root that the ancestor's
// record, when it comes, also takes, so the subtree stays one trace).
// Only then can a span's trace differ from what `export otlp` later
// derives from the store, which knows the whole chain: for calls under an
// ancestor that runs longer than hold (a server's accept loop), and for
// calls whose parent was sampled out.
type rootResolver struct {
	hold time.Duration
	emit func(record.Call)

	mu      sync.Mutex
	memo    []memoSlot               // call id → root, see memoIndex
	waiting map[uint64][]record.Call // by the parent id they wait for
	order   []heldRef                // FIFO of waits, for expiry
	nheld   int                      // records in waiting
	out     []record.Call            // released, to emit after unlocking
	stack   []record.Call            // resolve's work list
	heldN   atomic.Int64             // nheld, for /metrics without the lock
}

// memoSlot is one call's root in the memo; id 0 (no call) is empty.
type memoSlot struct{ id, root uint64 }

// memoIndex is the memo slot of call id. Within a session ids are
// sequential, so the memo holds the roots of the session's last rootMemo
// calls (by id: calls that started since), each in a slot of its own. The
// sessions of several processes share the memo (each then keeps fewer of
// its calls): the session's number, in the id's high bits, shifts its
// slots by a Fibonacci hash, so that consecutive sessions' calls, which
// advance together, land far apart. A map, as before, cost three or four
// probes and an insert per record, and a new map every rootMemo records.
func memoIndex(id uint64) uint64 {
	shift := ((id >> 40) * 0x9e3779b97f4a7c15) >> 48
	return (id + shift) & (rootMemo - 1)
}

type heldRef struct {
	parent uint64
	since  time.Time
}

func newRootResolver(hold time.Duration, emit func(record.Call)) *rootResolver {
	return &rootResolver{
		hold: hold, emit: emit,
		memo: make([]memoSlot, rootMemo), waiting: map[uint64][]record.Call{},
	}
}

// add takes one record; it is emitted now if its root is known.
func (r *rootResolver) add(c record.Call) {
	r.mu.Lock()
	// The common case, a record whose root is known and that nothing
	// waits for, is emitted without the release machinery.
	if _, waited := r.waiting[c.ID]; !waited {
		root, ok := c.ID, c.ParentID == 0
		if !ok {
			root, ok = r.lookup(c.ParentID)
		}
		if _, provisional := r.lookup(c.ID); ok && !provisional {
			c.TraceRoot = root
			r.remember(c.ID, root)
			r.mu.Unlock()
			r.emit(c)
			return
		}
	}
	switch root, ok := r.lookup(c.ID); {
	case ok: // a provisional root given to its held descendants
		r.resolve(c, root)
	case c.ParentID == 0:
		r.resolve(c, c.ID)
	default:
		if root, ok := r.lookup(c.ParentID); ok {
			r.resolve(c, root)
		} else {
			w, seen := r.waiting[c.ParentID]
			if !seen {
				// One entry per awaited ancestor: siblings share its wait.
				r.order = append(r.order, heldRef{c.ParentID, time.Now()})
			}
			r.waiting[c.ParentID] = append(w, c)
			r.nheld++
			if r.nheld > maxHeld {
				r.releaseOldest(time.Time{}, true)
			}
		}
	}
	r.unlockAndEmit()
}

// expire releases the records held longer than hold (all of them when
// all is set, at the end of the trace).
func (r *rootResolver) expire(now time.Time, all bool) {
	r.mu.Lock()
	if all {
		for len(r.order) > 0 {
			r.releaseOldest(time.Time{}, true)
		}
	} else {
		r.releaseOldest(now.Add(-r.hold), false)
	}
	r.unlockAndEmit()
}

// unlockAndEmit publishes the held count, unlocks, and emits what was
// released, outside the lock (emit queues the record).
func (r *rootResolver) unlockAndEmit() {
	r.heldN.Store(int64(r.nheld))
	out := r.out
	r.out = nil
	r.mu.Unlock()
	for i := range out {
		r.emit(out[i])
	}
}

// releaseOldest releases the waits begun before cutoff (when force, the
// oldest wait still holding records), each with its awaited ancestor as
// provisional root. Entries of waits already resolved are dropped on the
// way. Called with mu held.
func (r *rootResolver) releaseOldest(cutoff time.Time, force bool) {
	for len(r.order) > 0 {
		h := r.order[0]
		if !force && !h.since.Before(cutoff) {
			return
		}
		r.order = r.order[1:]
		if len(r.order) == 0 {
			r.order = nil // release the backing array after a burst
		}
		if _, ok := r.waiting[h.parent]; ok {
			r.remember(h.parent, h.parent)
			r.release(h.parent, h.parent)
			if force {
				return
			}
		}
	}
}

func (r *rootResolver) lookup(id uint64) (uint64, bool) {
	m := &r.memo[memoIndex(id)]
	return m.root, m.id == id && id != 0
}

// remember keeps id → root in id's slot (memoIndex), in place of the call
// that held it, rootMemo ids earlier in the same session. Called with mu
// held.
func (r *rootResolver) remember(id, root uint64) {
	r.memo[memoIndex(id)] = memoSlot{id, root}
}

// resolve emits c with root and releases its held descendants. Called
// with mu held.
func (r *rootResolver) resolve(c record.Call, root uint64) {
	c.TraceRoot = root
	r.remember(c.ID, root)
	r.out = append(r.out, c)
	r.release(c.ID, root)
}

// release emits, with root, every record waiting for id, and theirs in
// turn. Called with mu held.
func (r *rootResolver) release(id, root uint64) {
	r.stack = append(r.stack[:0], r.waiting[id]...)
	r.nheld -= len(r.waiting[id])
	delete(r.waiting, id)
	for len(r.stack) > 0 {
		c := r.stack[len(r.stack)-1]
		r.stack = r.stack[:len(r.stack)-1]
		c.TraceRoot = root
		r.remember(c.ID, root)
		r.out = append(r.out, c)
		if kids, ok := r.waiting[c.ID]; ok {
			r.stack = append(r.stack, kids...)
			r.nheld -= len(kids)
			delete(r.waiting, c.ID)
		}
	}
}

// held is the number of records waiting for an ancestor.
func (r *rootResolver) held() int { return int(r.heldN.Load()) }
