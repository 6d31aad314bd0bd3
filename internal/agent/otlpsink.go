package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// newOTLPSink is the OTLP sink of one session.
func (s *session) newOTLPSink(o OTLPOptions) (*otlpSink, error) {
	k, err := openOTLPSink(o, s.budget, s.log)
	if err != nil {
		return nil, err
	}
	k.register(s.sess)
	return k, nil
}

// openOTLPSink makes an OTLP sink with no session yet: a host's, which
// every target's session registers with (register) before its first
// record, so that each span has the resource of its own program.
func openOTLPSink(o OTLPOptions, budget *Budget, log *slog.Logger) (*otlpSink, error) {
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
	requests := cmp.Or(o.Requests, DefaultOTLPRequests)
	w := &otlpWriter{exp: exp, service: o.ServiceName, version: o.Version,
		procs: map[uint64]*otlp.Process{}, encs: make(chan *otlpEncoders, requests), log: log}
	for range requests {
		w.encs <- &otlpEncoders{by: map[uint64]*otlpEncoder{}, res: map[spanProc][]byte{}, groups: map[spanProc][]int32{}}
	}
	k := &otlpSink{w: w, stop: make(chan struct{}), loopDone: make(chan struct{})}
	k.queueSink = newQueueSink(otlpSinkName, w, queue.Options{
		OKBytes:            cmp.Or(o.OKBytes, budget.OTLPOKLane),
		ErrBytes:           cmp.Or(o.ErrBytes, budget.OTLPErrLane),
		BatchSize:          otlpBatch,
		CloseTimeout:       cmp.Or(o.CloseTimeout, DefaultOTLPCloseTimeout),
		ShedOKWhileFailing: true,
		Writers:            requests,
		Logger:             log,
		Name:               "otlp endpoint " + exp.Endpoint(),
	})
	k.res = newRootResolver(cmp.Or(o.Hold, DefaultRootHold), k.queueSink.Push)
	return k, nil
}

// register gives the spans of session sess's calls their resource: its
// program and process (service.name, process.pid, process.executable.*,
// obs_agent.session_id), which also salts their ids, so the spans of two
// sessions never share an id.
func (k *otlpSink) register(sess record.Session) {
	p := otlp.ProcessOf(sess, k.w.service)
	k.w.mu.Lock()
	k.w.procs[sess.ID] = &p
	k.w.mu.Unlock()
	k.w.log.Info("sending spans over OTLP", "endpoint", k.w.exp.Endpoint(), "service", p.ServiceName, "session", sess.ID)
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

func (k *otlpSink) Push(cs []record.Call) { k.res.add(cs...) }

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
// from OTLPOptions.Requests writers at once; each takes an encoder set of
// its own.
type otlpWriter struct {
	exp              *otlp.Exporter
	service, version string
	log              *slog.Logger
	encs             chan *otlpEncoders // one per writer: never waited for
	rejected         atomic.Uint64
	mu               sync.RWMutex
	procs            map[uint64]*otlp.Process // by session id (register)
}

// maxEncoders bounds the encoders a writer keeps, one per session it
// sends spans of (a host traces a few programs, each a session), and
// maxResources the resources of the processes of file sessions.
const (
	maxEncoders  = 16
	maxResources = 1024
	// encoderAllowance is the memory of one encoder's buffers at full
	// batches: 2,048 spans of a 48-character function name encode to
	// 0.47 MB, held twice (the spans, the request). A host plans it per
	// program and request in flight (host.planBudget).
	encoderAllowance = 1 << 20
)

// otlpEncoders is one writer's encoders, by session, and the resources of
// the processes of file sessions.
type otlpEncoders struct {
	by     map[uint64]*otlpEncoder
	res    map[spanProc][]byte
	groups map[spanProc][]int32 // scratch: the calls of each process
	order  []spanProc
	out    []byte
}

type otlpEncoder struct {
	enc  *otlp.Encoder
	proc *otlp.Process
}

// spanProc is the process a span is of: its session and pid.
type spanProc struct {
	session uint64
	pid     uint32
}

func procOf(c *record.Call) spanProc { return spanProc{otlp.SessionOf(c.ID), c.PID} }

// errEncode is an export request that could not be put together: sending
// it again cannot help.
var errEncode = errors.New("encode the spans")

func (w *otlpWriter) WriteCalls(calls []record.Call) error {
	if len(calls) == 0 {
		return nil
	}
	e := <-w.encs
	defer func() { w.encs <- e }()
	body, own, err := e.encode(w, calls)
	if err != nil {
		return fmt.Errorf("%w: %w", errEncode, err)
	}
	var res otlp.Result
	if own != nil && w.exp.Gzip() {
		// One encoder's request as it is (the common case): its own
		// gzip, which knows the spans' layout, at about half the CPU of
		// a general compressor (otlp.BenchmarkGzip).
		res, err = w.exp.ExportBody(context.Background(), own.Gzipped())
	} else {
		res, err = w.exp.ExportEncoded(context.Background(), body)
	}
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

// encode is the export request of calls: one ResourceSpans per process,
// the resource of its program and process (a session of one process has
// one; a session of every process of a file, one per process), each
// written by the encoder of its session. Encoded requests concatenate:
// protobuf merges the repeated resource_spans of messages written one
// after the other, so the request of several processes is their requests
// end to end.
//
// own is set when the request is one encoder's bytes as they are (one
// process, whose resource the encoder already has), so that its own gzip
// can compress it.
func (e *otlpEncoders) encode(w *otlpWriter, calls []record.Call) (body []byte, own *otlp.Encoder, err error) {
	first := procOf(&calls[0])
	one := true
	for i := range calls {
		if procOf(&calls[i]) != first {
			one = false
			break
		}
	}
	if one { // the common case: no grouping
		enc := e.encoder(w, first.session, first.pid)
		enc.enc.Reset()
		for i := range calls {
			addSpan(enc.enc, &calls[i])
		}
		if enc.proc.PID != 0 || first.pid == 0 {
			return enc.enc.Bytes(), enc.enc, nil
		}
		body, err := e.request(enc, first.pid)
		return body, nil, err
	}
	clear(e.groups)
	e.order = e.order[:0]
	for i := range calls {
		k := procOf(&calls[i])
		g, ok := e.groups[k]
		if !ok {
			e.order = append(e.order, k)
		}
		e.groups[k] = append(g, int32(i))
	}
	out := e.out[:0]
	for _, k := range e.order {
		idx := e.groups[k]
		enc := e.encoder(w, k.session, k.pid)
		enc.enc.Reset()
		for _, i := range idx {
			addSpan(enc.enc, &calls[i])
		}
		var err error
		if out, err = e.appendRequest(out, enc, k.pid); err != nil {
			return nil, nil, err
		}
	}
	e.out = out
	return out, nil, nil
}

// request is enc's request alone: its bytes as they are, or, when enc's
// session traces every process of a file, with the resource of process
// pid.
func (e *otlpEncoders) request(enc *otlpEncoder, pid uint32) ([]byte, error) {
	if enc.proc.PID != 0 || pid == 0 {
		return enc.enc.Bytes(), nil
	}
	out, err := otlp.ReplaceResource(e.out[:0], enc.enc.Bytes(), e.resource(enc.proc, pid))
	e.out = out
	return out, err
}

// appendRequest appends enc's request to dst, with the resource of
// process pid as request gives it.
func (e *otlpEncoders) appendRequest(dst []byte, enc *otlpEncoder, pid uint32) ([]byte, error) {
	if enc.proc.PID != 0 || pid == 0 {
		return append(dst, enc.enc.Bytes()...), nil
	}
	return otlp.ReplaceResource(dst, enc.enc.Bytes(), e.resource(enc.proc, pid))
}

// resource is the encoded resource of process pid of file session p.
func (e *otlpEncoders) resource(p *otlp.Process, pid uint32) []byte {
	k := spanProc{p.SessionID, pid}
	field, ok := e.res[k]
	if !ok {
		if len(e.res) >= maxResources {
			clear(e.res)
		}
		q := p.InProcess(pid)
		field = otlp.ResourceField(&q)
		e.res[k] = field
	}
	return field
}

// addSpan encodes c under its trace root (itself when it has none).
func addSpan(enc *otlp.Encoder, c *record.Call) {
	root := c.TraceRoot
	if root == 0 {
		root = c.ID
	}
	enc.Add(c, root)
}

// encoder is the writer's encoder of session sid's spans, made on first
// use. Every session registers before its first record; should one not
// have, its spans get a resource of the session id and pid alone.
func (e *otlpEncoders) encoder(w *otlpWriter, sid uint64, pid uint32) *otlpEncoder {
	if enc, ok := e.by[sid]; ok {
		return enc
	}
	if len(e.by) >= maxEncoders {
		clear(e.by)
	}
	w.mu.RLock()
	p, ok := w.procs[sid]
	w.mu.RUnlock()
	if !ok {
		proc := otlp.ProcessOf(record.Session{ID: sid, PID: pid}, w.service)
		p = &proc
	}
	enc := &otlpEncoder{enc: otlp.NewEncoder(p, w.version), proc: p}
	e.by[sid] = enc
	return enc
}

// Classify: a refusal (a 4xx other than 429, a certificate that is not
// trusted) can't be fixed by sending the same spans again; anything else
// is the endpoint being down or overloaded.
func (w *otlpWriter) Classify(err error) queue.Failure {
	var perm *otlp.PermanentError
	if errors.As(err, &perm) || errors.Is(err, errEncode) {
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
	emit func([]record.Call)

	mu      sync.Mutex
	memo    []memoSlot                    // call id → root, see memoIndex
	waiting map[uint64][]record.Call      // by the parent id they wait for
	order   []heldRef                     // FIFO of waits, for expiry
	nheld   int                           // records in waiting
	out     []record.Call                 // released, to emit after unlocking
	outBox  *[]record.Call                // where out's buffer is kept between callers
	spare   atomic.Pointer[[]record.Call] // the box the last caller left (lock)
	stack   []record.Call                 // resolve's work list
	heldN   atomic.Int64                  // nheld, for /metrics without the lock
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

func newRootResolver(hold time.Duration, emit func([]record.Call)) *rootResolver {
	return &rootResolver{
		hold: hold, emit: emit,
		memo: make([]memoSlot, rootMemo), waiting: map[uint64][]record.Call{},
	}
}

// add takes records: each is emitted now if its root is known, else held
// until it is (or expires). The records emitted, in order, go on to the
// queue in one Push.
func (r *rootResolver) add(cs ...record.Call) {
	r.lock()
	for i := range cs {
		r.take(cs[i])
	}
	r.unlockAndEmit()
}

// take resolves or holds one record. Called with mu held.
func (r *rootResolver) take(c record.Call) {
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
			r.out = append(r.out, c)
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
}

// expire releases the records held longer than hold (all of them when
// all is set, at the end of the trace).
func (r *rootResolver) expire(now time.Time, all bool) {
	r.lock()
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
// released, outside the lock (emit queues the records, and an error
// record may wait there for a spill); the buffer is then kept for the
// next caller.
func (r *rootResolver) unlockAndEmit() {
	r.heldN.Store(int64(r.nheld))
	out, box := r.out, r.outBox
	r.out, r.outBox = nil, nil
	r.mu.Unlock()
	if len(out) > 0 {
		r.emit(out)
	}
	clear(out) // no strings kept alive
	*box = out[:0]
	r.spare.Store(box)
}

// lock takes mu and, for out, the buffer of released records the last
// caller left (the readers of two lanes and the expiry ticker take
// turns); a new one only when another caller still has it.
func (r *rootResolver) lock() {
	r.mu.Lock()
	if r.outBox = r.spare.Swap(nil); r.outBox == nil {
		r.outBox = new([]record.Call)
	}
	r.out = *r.outBox
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
