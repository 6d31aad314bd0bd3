package agent

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/obs-agent/obs-agent/internal/metrics"
	"github.com/obs-agent/obs-agent/internal/queue"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

// The session is a pipeline: tracer (kernel rings) → decoder (readLane and
// the converter) → sinks. Every decoded call record goes to every sink
// through the fan-out; each sink has its own bounded error-first queue
// (internal/queue), its own writer goroutine and its own ledger of what it
// wrote and lost. A sink's Push never waits on its destination (ok records
// are shed, counted, when its queue is full), so a slow or dead sink costs
// neither the target, nor the store, nor another sink anything but its own
// losses. The only wait is the store's error lane waiting one fsync for a
// spill to its journal, which keeps an error record rather than lose it.
//
// /metrics is not a record sink: its per-function counts and histograms
// come from the kernel's exact aggregates, which no sink's losses change
// (a record-fed metric would undercount exactly when a sink sheds); it
// reads each sink's queue depths and ledger (Sink.Health).

// Sink is one destination of the call records.
type Sink interface {
	// Name labels the sink in the exit line, logs and /metrics.
	Name() string
	// Push hands over records, those a reader took from the ring in one
	// go; it must not block on the destination, and must not keep cs.
	Push(cs []record.Call)
	// Close says no more records come; Wait then returns once every
	// record was written or counted as lost.
	Close()
	Wait() error
	// Ledger is the sink's account so far.
	Ledger() Ledger
	// Health is what /metrics shows of the sink.
	Health() metrics.Sink
	// start launches the sink's writer; Push may be called before.
	start()
}

// Ledger is one sink's account of the records pushed to it, per function.
// Once the sink has drained, every record pushed is in Written or Dropped,
// or (the store only) still in its spill journal for the next run.
type Ledger struct {
	Sink    string
	Written map[string]uint64
	// Dropped is every record lost: ok records shed under pressure or
	// while the destination was failing, error records that could not be
	// kept at all.
	Dropped map[string]uint64
	// ErrorsLost is the error records among Dropped.
	ErrorsLost map[string]uint64
	// Rejected counts records the destination accepted a request for but
	// said it dropped (OTLP partial success); it does not say which, so
	// they are not in Written or Dropped by function.
	Rejected uint64
	// The store's other rows that could not be written.
	GapsLost, SamplesLost uint64
}

// Totals sums the ledger over functions.
func (l *Ledger) Totals() (written, dropped, errorsLost uint64) {
	return sum(l.Written), sum(l.Dropped), sum(l.ErrorsLost)
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// fanout hands every record to every sink, the store first.
type fanout []Sink

func (f fanout) Push(cs []record.Call) {
	for _, s := range f {
		s.Push(cs)
	}
}

// queueSink is a sink built from a queue and a writer: the queue holds the
// records (errors first, bounded), one goroutine drains it into the writer.
type queueSink struct {
	name   string
	q      *queue.Queue
	w      queue.Writer
	writes metrics.Log2Hist // duration of every batch write
	done   chan error
}

// newQueueSink makes a sink named name; opts.Name, when set, is the
// longer name its log messages use (the store's path).
func newQueueSink(name string, w queue.Writer, opts queue.Options) *queueSink {
	if opts.Name == "" {
		opts.Name = name
	}
	return &queueSink{name: name, q: queue.New(opts), w: w, done: make(chan error, 1)}
}

// start launches the writer goroutine.
func (k *queueSink) start() {
	go func() { k.done <- k.q.Drain(timedWriter{k.w, &k.writes}) }()
}

func (k *queueSink) Name() string          { return k.name }
func (k *queueSink) Push(cs []record.Call) { k.q.PushAll(cs) }
func (k *queueSink) Close()                { k.q.Close() }
func (k *queueSink) Wait() error           { return <-k.done }

func (k *queueSink) Ledger() Ledger {
	written, dropped := k.q.Counts()
	return Ledger{Sink: k.name, Written: written, Dropped: dropped, ErrorsLost: k.q.ErrorsLost()}
}

func (k *queueSink) Health() metrics.Sink {
	errs, oks, journal := k.q.Depth()
	l := k.Ledger()
	h := metrics.Sink{
		Name:   k.name,
		Queue:  []metrics.Depth{{Lane: "error", Records: errs}, {Lane: "ok", Records: oks}},
		Writes: &k.writes,
	}
	if journal > 0 || k.name == storeSinkName {
		h.Queue = append(h.Queue, metrics.Depth{Lane: "error_journal", Records: journal})
	}
	h.Written, h.Dropped, h.ErrorsLost = l.Totals()
	return h
}

// timedWriter measures each batch write for
// obs_agent_sink_write_duration_seconds.
type timedWriter struct {
	w queue.Writer
	h *metrics.Log2Hist
}

func (t timedWriter) WriteCalls(c []record.Call) error {
	start := time.Now()
	err := t.w.WriteCalls(c)
	t.h.Observe(time.Since(start))
	return err
}

func (t timedWriter) Classify(err error) queue.Failure { return t.w.Classify(err) }

// storeSinkName names the store sink.
const storeSinkName = "store"

// storeWriter is the store sink's writer: it reads the store's errors,
// which only it knows, for the queue.
type storeWriter struct{ st *store.Store }

func (w storeWriter) WriteCalls(c []record.Call) error { return w.st.WriteCalls(c) }

// Classify: a constraint violation (an id already stored) is a refusal of
// those records; everything else is the store failing, by sentinel.
func (w storeWriter) Classify(err error) queue.Failure {
	what, kind := store.Trouble(err)
	f := queue.Failure{Refused: store.Refused(err), Kind: "other", What: what}
	if kind != nil {
		f.Kind = kind.Error()
	}
	return f
}

// storeSink is the store: call records through its queue; the session's
// other rows (probe gaps, resource samples) straight, since they are few
// and the store alone keeps them, each failure logged and counted in the
// ledger.
type storeSink struct {
	*queueSink
	st  *store.Store
	log *slog.Logger
	// Rows other than calls that could not be written.
	gapsLost, samplesLost atomic.Uint64
}

// newStoreSink is the store sink: error records that cannot reach the
// store spill to a journal (beside it unless --spill-dir), which the next
// run on this store replays.
func (s *session) newStoreSink() *storeSink {
	return &storeSink{
		queueSink: newQueueSink(storeSinkName, storeWriter{s.st}, queue.Options{
			OKBytes: s.budget.OKLane, ErrBytes: s.budget.ErrLane, SpillDir: s.spillDir(), Logger: s.log,
			Name: fmt.Sprintf("%s %s", storeSinkName, s.opts.DB),
		}),
		st: s.st, log: s.log.With("sink", storeSinkName),
	}
}

// WriteGap stores a probe gap (the breaker's gapSink).
func (k *storeSink) WriteGap(g record.Gap) {
	if err := k.st.WriteGaps([]record.Gap{g}); err != nil {
		k.gapsLost.Add(1)
		k.log.Error("store a probe gap: it is lost, and counted in the exit line", "function", g.Function, "err", err)
	}
}

// WriteSample stores one resource sample.
func (k *storeSink) WriteSample(rs record.ResourceSample) {
	if err := k.st.WriteSamples([]record.ResourceSample{rs}); err != nil {
		if k.samplesLost.Add(1) == 1 {
			k.log.Warn("write resource sample: it is lost; further failures are counted, not logged", "err", err)
		}
	}
}

func (k *storeSink) Ledger() Ledger {
	l := k.queueSink.Ledger()
	l.GapsLost, l.SamplesLost = k.gapsLost.Load(), k.samplesLost.Load()
	return l
}

// waitSinks closes every sink and waits for each to drain; they drain in
// parallel, so a failing sink's close timeout doesn't add to another's.
// It returns the store's error (the session's result depends on it) and
// logs the others': their losses are in their ledgers and the exit line.
func (s *session) waitSinks() error { return s.sinks.drain(s.log) }

// drain is waitSinks for any set of sinks (a host's too).
func (f fanout) drain(log *slog.Logger) error {
	for _, k := range f {
		k.Close()
	}
	var storeErr error
	for _, k := range f {
		err := k.Wait()
		switch {
		case err == nil:
		case k.Name() == storeSinkName:
			storeErr = err
		default:
			log.Error("sink did not drain", "sink", k.Name(), "err", err)
		}
	}
	return storeErr
}

// ledgers are every sink's accounts, the store's first.
func (s *session) ledgers() []Ledger {
	out := make([]Ledger, len(s.sinks))
	for i, k := range s.sinks {
		out[i] = k.Ledger()
	}
	return out
}

// summary is the sink's line in the exit report.
func (l *Ledger) summary() string {
	written, dropped, errLost := l.Totals()
	s := fmt.Sprintf("%s sink: sent %d records, lost %d (ok records not sent %d, error records lost %d)",
		l.Sink, written, dropped, dropped-errLost, errLost)
	if l.Rejected > 0 {
		s += fmt.Sprintf("; the receiver dropped %d of the spans it accepted", l.Rejected)
	}
	if errLost > 0 {
		s += ": ERROR RECORDS LOST: " + formatLost(l.ErrorsLost)
	}
	return s
}

// storeSinkAccounts keeps every sink's ledger, per function, in the
// store (session_sinks), for `query stats`: the exit line's per-sink
// lines, kept.
func (s *session) storeSinkAccounts() {
	var accts []store.SinkAccount
	for _, l := range s.result.Sinks {
		funcs := map[string]bool{}
		for f := range l.Written {
			funcs[f] = true
		}
		for f := range l.Dropped {
			funcs[f] = true
		}
		for f := range funcs {
			accts = append(accts, store.SinkAccount{Sink: l.Sink, Function: f,
				Written: l.Written[f], Dropped: l.Dropped[f], ErrorsLost: l.ErrorsLost[f]})
		}
	}
	if err := s.st.SetSessionSinks(s.sess.ID, accts); err != nil {
		s.log.Error("cannot store the sinks' accounts: `query stats` will not show this session's losses per sink (the exit line has them)", "session", s.sess.ID, "err", err)
	}
}
