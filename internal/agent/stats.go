package agent

import (
	"context"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

// statsLoop writes the per-function aggregates every StatsInterval.
func (s *session) statsLoop(ctx context.Context) {
	periodically(ctx, s.opts.statsEvery(), func() {
		if _, err := s.writeStats(); err != nil {
			s.log.Warn("write aggregates", "err", err)
		}
	})
}

// statsEvery is StatsInterval, or 1 min.
func (o *Options) statsEvery() time.Duration {
	if o.StatsInterval <= 0 {
		return time.Minute
	}
	return o.StatsInterval
}

// periodically calls f every d until ctx is done.
func periodically(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// durationTimer fires once d has passed; never when d is 0. stop releases
// it.
func durationTimer(d time.Duration) (fired <-chan time.Time, stop func()) {
	if d <= 0 {
		return nil, func() {}
	}
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

// statsState is what was last written, so each interval stores a delta.
type statsState struct {
	last     []record.FuncStats
	lastTime int64
}

// snapshot reads the cumulative aggregates: kernel counters, plus calls
// closed in user space, plus the queue's recorded and dropped counts.
func (s *session) snapshot() ([]record.FuncStats, error) {
	if s.follow != nil {
		return s.follow.snapshot()
	}
	return s.kernelTotals()
}

// kernelTotals is snapshot per function, every process of a file target
// together: the kernel's counters count each call when it returns, so they
// are exact at once, where a file target's per-process rows (built from
// its records, follower.snapshot) trail by the records on their way. It
// is what /metrics shows.
func (s *session) kernelTotals() ([]record.FuncStats, error) {
	ks, err := s.tr.Stats()
	if err != nil {
		return nil, err
	}
	recorded, dropped := s.sinkCounts()
	names := s.fnames()
	s.conv.mu.Lock()
	defer s.conv.mu.Unlock()
	out := make([]record.FuncStats, len(ks))
	for i, k := range ks {
		var e extraCounts
		if i < len(s.conv.extra) {
			e = s.conv.extra[i]
		}
		f := &out[i]
		f.PID = uint32(s.pid)
		f.Function = names[i]
		f.Calls = k.Calls + e.calls
		f.Errors = k.Errors
		f.Panics = k.Panics + e.panics
		f.Sampled = k.Sampled
		f.Dropped = k.Dropped + dropped[f.Function]
		f.Recorded = recorded[f.Function]
		if s.shared && i < len(s.handed) {
			f.Recorded = s.handed[i].Load()
		}
		f.TotalNs = k.TotalNs + e.totalNs
		f.MaxNs = max(k.MaxNs, e.maxNs)
		for b := range f.Hist {
			f.Hist[b] = k.Hist[b] + e.hist[b]
		}
	}
	return out, nil
}

// writeStats stores the change since the last call. It returns the totals
// so far, even when the store refused the write.
func (s *session) writeStats() ([]record.FuncStats, error) {
	now := time.Now().UnixNano()
	cur, err := s.snapshot()
	if err != nil {
		return nil, err
	}
	st := &s.stats
	if st.lastTime == 0 {
		st.lastTime = s.sess.Start
	}
	var delta []record.FuncStats
	for i := range cur {
		d := cur[i]
		// A file target's snapshot grows new rows at its end as new
		// processes appear; a row keeps its position.
		if i < len(st.last) {
			d.Sub(&st.last[i])
		}
		if d.Calls == 0 && d.Recorded == 0 && d.Dropped == 0 {
			continue
		}
		d.IntervalStart, d.IntervalEnd = st.lastTime, now
		delta = append(delta, d)
	}
	if len(delta) > 0 {
		if err := s.st.WriteStats(delta); err != nil {
			return cur, err
		}
	}
	st.last, st.lastTime = cur, now
	return cur, nil
}

// finishResult fills the session result from the final totals and the
// tracer's health counters.
func (s *session) finishResult(totals []record.FuncStats) {
	r := &s.result
	for _, f := range totals {
		r.Calls += f.Calls
		r.Recorded += f.Recorded
		r.Sampled += f.Sampled
		r.Dropped += f.Dropped
	}
	if s.follow != nil {
		r.Recorded = s.follow.recorded()
		r.Processes = s.follow.processes()
	}
	if h, err := s.tr.Health(); err == nil {
		r.Health = h
	}
}

// sinkCounts is what the store sink wrote and dropped per function, for
// the session's aggregates; nil maps for a target of a host of several
// (host.go): the one store sink's ledger is keyed by function name, which
// two binaries can share, so a target counts what it handed to the sinks
// instead, and the host stores what the sink dropped under pid 0.
func (s *session) sinkCounts() (written, dropped map[string]uint64) {
	if s.shared {
		return nil, nil
	}
	l := s.store.Ledger()
	return l.Written, l.Dropped
}
