package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// DefaultCallCost is the CPU time one traced call costs the target in
// probe traps (a trap at entry and one at the RET), as measured on our
// machines: the floor of BenchmarkOverhead, about 10 µs. The circuit
// breaker turns call rates into CPU with it.
const DefaultCallCost = 10 * time.Microsecond

// breaker is the circuit breaker that protects the target: once a second it
// estimates the CPU the probe traps cost the target (calls per second ×
// DefaultCallCost), and when that passes the budget (Options.MaxOverhead,
// a fraction of one CPU) it pauses the probes of the hottest functions
// until the estimate is back under 80% of the budget. A paused function's
// entry sites go first; its RET sites follow a tick later, so calls already
// running still close. Each pause is stored as a gap (function, from, to)
// and logged. After a back-off (5 s, doubling on each new trip of the same
// function, at most 5 min) the probes come back, and the next tick decides
// again from the measured rate.
//
// It depends on small interfaces, not on the session: the probes it reads
// and pauses (probeControl, the tracer), where its gaps go (gapSink, the
// store sink) and counters that /metrics reads (probeCounts).
type breaker struct {
	probes probeControl
	gaps   gapSink
	name   func(id int) string
	pid    uint32
	log    *slog.Logger
	counts *probeCounts
	budget float64
	cost   time.Duration
	every  time.Duration

	prev   []uint64
	prevT  time.Time
	paused map[int]*pauseState
	backof map[int]time.Duration
}

type pauseState struct {
	gap     record.Gap
	until   time.Time
	retsOff bool // the RET sites are gone too
}

// probeControl is what the breaker needs of the tracer: the kernel's
// per-function counters, and the sites to take out (the rest go back).
type probeControl interface {
	Stats() ([]uprobe.Stats, error)
	Reattach(removed map[int]uprobe.Removed) (time.Duration, error)
	Sites() int
}

// probeCounts are what the breaker changes that others read while it
// runs: its pauses, and the sites attached after its last re-attach (the
// tracer's own count may only be read by the goroutine that re-attaches).
type probeCounts struct {
	pauses atomic.Uint64
	sites  atomic.Int64
}

// gapSink keeps the breaker's gaps; it handles (logs and counts) its own
// failures.
type gapSink interface {
	WriteGap(record.Gap)
}

func newBreaker(probes probeControl, gaps gapSink, name func(id int) string, pid int, budget float64, counts *probeCounts, log *slog.Logger) *breaker {
	return &breaker{
		probes: probes, gaps: gaps, name: name, pid: uint32(pid), log: log, counts: counts,
		budget: budget, cost: DefaultCallCost, every: time.Second,
		paused: map[int]*pauseState{}, backof: map[int]time.Duration{},
	}
}

func (b *breaker) run(ctx context.Context) {
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			err := b.tick(now)
			if errors.Is(err, uprobe.ErrDetached) {
				return // the session is ending: nothing left to pause
			}
			if err != nil {
				b.log.Error("circuit breaker", "err", err)
			}
		}
	}
}

// tick is one decision. It is separate from run so tests can drive it.
func (b *breaker) tick(now time.Time) error {
	ks, err := b.probes.Stats()
	if err != nil {
		return err
	}
	calls := make([]uint64, len(ks))
	for i := range ks {
		calls[i] = ks[i].Calls
	}
	if b.prev == nil {
		b.prev, b.prevT = calls, now
		return nil
	}
	dt := now.Sub(b.prevT).Seconds()
	if dt <= 0 {
		return nil
	}
	rates := make([]float64, len(calls))
	for i := range calls {
		var prev uint64 // a function a reload added since: from 0
		if i < len(b.prev) {
			prev = b.prev[i]
		}
		rates[i] = float64(calls[i]-prev) / dt
	}
	b.prev, b.prevT = calls, now

	changed := false
	// Resume what has waited out its back-off; finish pauses that began
	// last tick by removing their RET sites.
	for id, p := range b.paused {
		switch {
		case !now.Before(p.until):
			p.gap.End = now.UnixNano()
			b.gaps.WriteGap(p.gap)
			delete(b.paused, id)
			b.log.Info("resuming probes", "function", b.name(id), "paused_for", now.Sub(time.Unix(0, p.gap.Start)).Round(time.Millisecond))
			changed = true
		case !p.retsOff:
			p.retsOff = true
			changed = true
		}
	}

	est := 0.0
	for i, r := range rates {
		if _, ok := b.paused[i]; !ok {
			est += r * b.cost.Seconds()
		}
	}
	if est > b.budget {
		order := make([]int, 0, len(rates))
		for i := range rates {
			if _, ok := b.paused[i]; !ok && rates[i] > 0 {
				order = append(order, i)
			}
		}
		sort.Slice(order, func(a, c int) bool { return rates[order[a]] > rates[order[c]] })
		for _, id := range order {
			if est <= 0.8*b.budget {
				break
			}
			cpu := rates[id] * b.cost.Seconds()
			est -= cpu
			back := min(max(2*b.backof[id], 5*time.Second), 5*time.Minute)
			b.backof[id] = back
			p := &pauseState{until: now.Add(back), gap: record.Gap{
				PID: b.pid, Function: b.name(id), Start: now.UnixNano(),
				Reason: fmt.Sprintf("circuit breaker: %.0f calls/s cost the target about %.2f CPU in probe traps; budget --max-overhead %.2f", rates[id], cpu, b.budget),
			}}
			b.paused[id] = p
			b.counts.pauses.Add(1)
			b.gaps.WriteGap(p.gap)
			b.log.Warn("pausing probes: calls while paused are not recorded (see gaps in 'obs-agent query stats')",
				"function", b.name(id), "calls_per_s", int(rates[id]), "est_cpu", fmt.Sprintf("%.2f", cpu),
				"budget", b.budget, "for", back)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	removed := make(map[int]uprobe.Removed, len(b.paused))
	for id, p := range b.paused {
		removed[id] = uprobe.Removed{Entry: true, Rets: p.retsOff}
	}
	took, err := b.probes.Reattach(removed)
	if err != nil {
		return fmt.Errorf("re-attach probes: %w", err)
	}
	b.counts.sites.Store(int64(b.probes.Sites()))
	b.log.Debug("probes re-attached", "paused", len(b.paused), "took", took)
	return nil
}

// close ends the gaps still open when the session ends.
func (b *breaker) close(now time.Time) {
	for id, p := range b.paused {
		p.gap.End = now.UnixNano()
		b.gaps.WriteGap(p.gap)
		delete(b.paused, id)
	}
}
