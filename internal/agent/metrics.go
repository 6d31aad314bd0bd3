package agent

import (
	"fmt"
	"slices"

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
	s.info = s.metricsInfo()
	return metrics.Serve(s.opts.Metrics, metricsSource{s}, s.opts.Logger)
}

// metricsInfo names the session's program in obs_agent_session_info and
// in the binary label: the path its processes run it by.
func (s *session) metricsInfo() metrics.Info {
	return metrics.Info{Session: s.sess.ID, Binary: s.sess.Binary, BuildID: buildID(s.bin.Path), GoVersion: s.bin.GoVersion}
}

// metricsSource is the session seen by internal/metrics: the same
// cumulative aggregates the stats rows are written from, plus the health
// counters. It only reads; the HTTP server calls it concurrently with the
// session's own goroutines.
type metricsSource struct{ s *session }

func (m metricsSource) Snapshot() (metrics.Snapshot, error) {
	s := m.s
	snap, err := s.metricsSnapshot(s.store.Ledger().ErrorsLost)
	if err != nil {
		return snap, err
	}
	for _, k := range s.sinks {
		snap.Health.Sinks = append(snap.Health.Sinks, k.Health())
	}
	return snap, nil
}

// metricsSnapshot is the session's program, its functions and its
// tracer's health (not the sinks', which a host shares); errLost is the
// error records lost per function, nil when the session cannot tell them
// from another's (a target of a host).
func (s *session) metricsSnapshot(errLost map[string]uint64) (metrics.Snapshot, error) {
	totals, err := s.kernelTotals()
	if err != nil {
		return metrics.Snapshot{}, err
	}
	s.conv.mu.Lock()
	unfinished := make([]uint64, max(len(s.conv.extra), len(totals)))
	for i := range s.conv.extra {
		unfinished[i] = s.conv.extra[i].unfinished
	}
	s.conv.mu.Unlock()
	snap := metrics.Snapshot{Sessions: []metrics.Info{s.info}}
	snap.Functions = make([]metrics.Function, len(totals))
	for i := range totals {
		t := &totals[i]
		f := &snap.Functions[i]
		f.Binary, f.Name = s.info.Binary, t.Function
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
	return snap, nil
}

// hostMetrics is every target of a host seen by internal/metrics, through
// one endpoint: each target's functions labelled by its binary (the
// functions of two targets of one file, two --pid of it, added up: the
// counts stay exact, as `query stats --binary` adds them), the health
// counters added up over the targets, and the host's sinks.
type hostMetrics struct{ h *host }

func (m hostMetrics) Snapshot() (metrics.Snapshot, error) {
	h := m.h
	h.mu.Lock()
	targets := slices.Clone(h.targets)
	h.mu.Unlock()
	var snap metrics.Snapshot
	type key struct{ binary, name string }
	at := map[key]int{}
	rings := map[string]int{}
	for _, ht := range targets {
		part, err := ht.metricsSnapshot()
		if err != nil {
			return metrics.Snapshot{}, fmt.Errorf("%s: %w", ht.t, err)
		}
		snap.Sessions = append(snap.Sessions, part.Sessions...)
		for _, f := range part.Functions {
			k := key{f.Binary, f.Name}
			i, ok := at[k]
			if !ok {
				at[k] = len(snap.Functions)
				snap.Functions = append(snap.Functions, f)
				continue
			}
			addFunction(&snap.Functions[i], &f)
		}
		a, b := &snap.Health, &part.Health
		a.ProbeSites += b.ProbeSites
		a.Functions += b.Functions
		a.BreakerPauses += b.BreakerPauses
		a.MapFull += b.MapFull
		a.ReadFail += b.ReadFail
		a.UnmatchedReturns += b.UnmatchedReturns
		for _, r := range b.Rings {
			i, ok := rings[r.Lane]
			if !ok {
				rings[r.Lane] = len(a.Rings)
				a.Rings = append(a.Rings, r)
				continue
			}
			a.Rings[i].Dropped += r.Dropped
		}
	}
	// What the store sink lost it counts by function name only, which two
	// binaries may share: it is shown under no binary, as the host stores
	// it under no process (writeShed).
	l := h.store.Ledger()
	names := make([]string, 0, len(l.Dropped))
	for f, n := range l.Dropped {
		if n > 0 {
			names = append(names, f)
		}
	}
	slices.Sort(names)
	for _, f := range names {
		snap.Functions = append(snap.Functions, metrics.Function{Name: f, LossOnly: true, Dropped: l.Dropped[f], ErrorsLost: l.ErrorsLost[f]})
	}
	for _, k := range h.sinks {
		snap.Health.Sinks = append(snap.Health.Sinks, k.Health())
	}
	return snap, nil
}

// addFunction adds b's counts to a's.
func addFunction(a, b *metrics.Function) {
	a.OK += b.OK
	a.Errors += b.Errors
	a.Panics += b.Panics
	a.Unfinished += b.Unfinished
	a.Recorded += b.Recorded
	a.Sampled += b.Sampled
	a.Dropped += b.Dropped
	a.ErrorsLost += b.ErrorsLost
	a.TotalNs += b.TotalNs
	for i := range a.Hist {
		a.Hist[i] += b.Hist[i]
	}
}

// metricsSnapshot is the target's part of a scrape: read live while it is
// traced, and kept as it was at its end once it has ended (its tracer is
// gone, and its counters must not go back).
func (ht *hosted) metricsSnapshot() (metrics.Snapshot, error) {
	ht.mu.Lock()
	defer ht.mu.Unlock()
	if ht.final != nil {
		return *ht.final, nil
	}
	return ht.s.metricsSnapshot(nil)
}

// freezeMetrics keeps the target's counters for the scrapes after its end,
// before its tracer is closed; it traces nothing any more, so its gauges
// (probe sites, functions) are 0.
func (ht *hosted) freezeMetrics(h *host) {
	snap, err := ht.s.metricsSnapshot(nil)
	if err != nil {
		h.log.Warn("metrics: the counters of a target that ended could not be read: its series are no longer served", "target", ht.t.String(), "err", err)
		snap = metrics.Snapshot{Sessions: []metrics.Info{ht.s.info}}
	}
	snap.Health.ProbeSites, snap.Health.Functions = 0, 0
	ht.final = &snap
}

// buildID is the executable's build id (symbols.BuildID): which build of
// a program was traced, for obs_agent_session_info and the processes rows.
func buildID(path string) string { return symbols.BuildID(path) }
