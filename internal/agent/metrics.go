package agent

import (
	"debug/elf"
	"encoding/hex"
	"fmt"

	"github.com/obs-agent/obs-agent/internal/metrics"
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
	unfinished := make([]uint64, len(s.conv.extra))
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
	h.ProbeSites, h.Functions = int(s.probes.sites.Load()), len(s.names)
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

// buildID is the executable's Go build id, else its GNU build id, else "":
// which build of a program was traced, for obs_agent_session_info.
func buildID(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, sec := range []string{".note.go.buildid", ".note.gnu.build-id"} {
		if desc, err := noteDesc(f, sec); err == nil && len(desc) > 0 {
			if sec == ".note.go.buildid" {
				return string(desc)
			}
			return hex.EncodeToString(desc)
		}
	}
	return ""
}

// noteDesc returns the descriptor of the first note in an ELF note
// section: namesz, descsz, type, then the name and the descriptor, each
// padded to 4 bytes.
func noteDesc(f *elf.File, name string) ([]byte, error) {
	sec := f.Section(name)
	if sec == nil {
		return nil, fmt.Errorf("no %s section", name)
	}
	b, err := sec.Data()
	if err != nil {
		return nil, err
	}
	if len(b) < 12 {
		return nil, fmt.Errorf("%s: short note", name)
	}
	bo := f.ByteOrder
	namesz, descsz := uint64(bo.Uint32(b)), uint64(bo.Uint32(b[4:]))
	off := 12 + (namesz+3)&^3
	if off+descsz > uint64(len(b)) {
		return nil, fmt.Errorf("%s: note overruns its section", name)
	}
	return b[off : off+descsz], nil
}
