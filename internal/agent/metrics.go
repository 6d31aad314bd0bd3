package agent

import (
	"github.com/obs-agent/obs-agent/internal/metrics"
	"github.com/obs-agent/obs-agent/internal/symbols"
)

// serveMetrics starts the /metrics endpoint when Options.Metrics is set.
// The caller closes the returned server before the tracer is closed: a
// scrape reads the tracer's maps. nil when there is no endpoint.
func (s *session) serveMetrics() *metrics.Server {
	if s.opts.Metrics == nil {
		return nil
	}
	info := metrics.Info{Session: s.sess.ID, Binary: s.bin.Path, BuildID: buildID(s.bin.Path), GoVersion: s.bin.GoVersion}
	return metrics.Serve(s.opts.Metrics, metricsSource{s}, info, s.opts.Logger)
}

// metricsSource is the session seen by internal/metrics: the same
// cumulative aggregates the stats rows are written from, plus the health
// counters. It only reads; the HTTP server calls it concurrently with the
// session's own goroutines.
type metricsSource struct{ s *session }

func (m metricsSource) Snapshot() (metrics.Snapshot, error) {
	s := m.s
	totals, err := s.functionTotals()
	if err != nil {
		return metrics.Snapshot{}, err
	}
	errLost := s.store.Ledger().ErrorsLost
	s.conv.mu.Lock()
	unfinished := make([]uint64, max(len(s.conv.extra), len(totals)))
	for i := range s.conv.extra {
		unfinished[i] = s.conv.extra[i].unfinished
	}
	s.conv.mu.Unlock()
	var snap metrics.Snapshot
	snap.Functions = make([]metrics.Function, len(totals))
	for i := range totals {
		t := &totals[i]
		f := &snap.Functions[i]
		f.Name = t.Function
		f.Errors, f.Panics, f.Unfinished = t.Errors, t.Panics, unfinished[i]
		// Calls counts every outcome; an ok call is one that is none of
		// the others.
		f.OK = t.Calls - min(t.Calls, t.Errors+t.Panics+f.Unfinished)
		f.Recorded, f.Sampled, f.Dropped = t.Recorded, t.Sampled, t.Dropped
		f.ErrorsLost = errLost[t.Function]
		f.TotalNs, f.Hist = t.TotalNs, t.Hist
	}
	h := &snap.Health
	h.ProbeSites, h.Functions = int(s.probes.sites.Load()), len(s.fnames())
	h.BreakerPauses = s.probes.pauses.Load()
	if th, err := s.tr.Health(); err == nil {
		h.Rings = []metrics.Ring{{Lane: "error", Dropped: th.RingErrFull}, {Lane: "ok", Dropped: th.RingOKFull}}
		h.MapFull, h.ReadFail, h.UnmatchedReturns = th.MapFull, th.ReadFail, th.UnmatchedRet
	}
	for _, k := range s.sinks {
		h.Sinks = append(h.Sinks, k.Health())
	}
	return snap, nil
}

// buildID is the executable's build id (symbols.BuildID): which build of
// a program was traced, for obs_agent_session_info and the processes rows.
func buildID(path string) string { return symbols.BuildID(path) }
