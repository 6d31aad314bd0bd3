package agent

import (
	"fmt"
	"slices"
)

// A reload that adds targets (Control.Update) attaches them beside the
// running ones, as a cgroup's watch attaches the programs its processes
// start later: each added target gets a tracer the budget reserved at
// start (Options.ReloadTargets, planBudget), sized as a cgroup's reserved
// tracer (rings and maps a 1/n share, maps for slotFuncs functions). The
// running targets' sessions, probes and rings are not touched. With no
// reserved tracer left, or a target that selects more functions than one
// holds, the add is refused with ErrNotInPlace and the caller restarts the
// agent, which plans its budget anew.

// growth is the targets a reload adds, read and selected but not attached
// yet.
type growth struct {
	h     *host
	added []*hosted
}

// grow prepares targets a reload adds: each binary is read, its functions
// selected and its file claimed (a process is never traced twice), and
// each must fit a reserved tracer. Nothing is attached yet; abort undoes
// it.
func (h *host) grow(ts []Target) (*growth, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return nil, fmt.Errorf("%w: the agent is ending", ErrNotInPlace)
	}
	if len(ts) > h.reloadSlots {
		return nil, fmt.Errorf("%w: %d targets added, and the memory budget has %d tracers left of the %d it reserved at start for targets a reload adds (limits.reload_targets)",
			ErrNotInPlace, len(ts), h.reloadSlots, h.opts.ReloadTargets)
	}
	g := &growth{h: h}
	for _, t := range ts {
		ht, err := h.prepareAdded(t)
		if ht != nil {
			g.added = append(g.added, ht)
		}
		if err == nil && len(ht.s.fnames()) > h.slotFuncs {
			err = fmt.Errorf("%w: %d functions selected, more than the %d a reserved tracer's maps hold", ErrNotInPlace, len(ht.s.fnames()), h.slotFuncs)
		}
		if err != nil {
			g.abortHeld()
			return nil, fmt.Errorf("%s: %w", t, err)
		}
	}
	return g, nil
}

// prepareAdded reads and selects one added target (h.mu held). What it
// returns, even with an error, is released by abortHeld.
func (h *host) prepareAdded(t Target) (*hosted, error) {
	switch {
	case t.Cgroup != "":
		// Its watch runs in the host's run loop, started with the host.
		return nil, fmt.Errorf("%w: a cgroup target is added", ErrNotInPlace)
	case t.PID != 0:
		return h.addPID(t)
	}
	_, st, err := checkExe(t.Exe)
	if err != nil {
		return nil, err
	}
	if err := h.claim(fileID{uint64(st.Dev), st.Ino}, claimant{t: t}); err != nil {
		return nil, err
	}
	ht, err := h.addExe(t)
	if err != nil {
		h.unclaim(t)
	}
	return ht, err
}

// abort undoes grow: nothing was attached.
func (g *growth) abort() {
	g.h.mu.Lock()
	defer g.h.mu.Unlock()
	g.abortHeld()
}

func (g *growth) abortHeld() {
	for _, ht := range g.added {
		g.h.unclaim(ht.t)
		g.h.close1(ht)
	}
	g.added = nil
}

// commit attaches the prepared targets, each with a session row of its
// own, and starts tracing them; the running targets go on untouched. It
// returns those that run; on an error the one that failed has its row
// ended ("could not start") and those not tried yet are released.
func (g *growth) commit() ([]*hosted, error) {
	h := g.h
	h.mu.Lock()
	defer h.mu.Unlock()
	var run []*hosted
	for i, ht := range g.added {
		err := fmt.Errorf("%w: the agent is ending", ErrNotInPlace)
		if !h.closing {
			ht.s.budget = h.budget
			// The reserved tracer's maps hold slotFuncs functions: what
			// the selection leaves is the room a later reload may add
			// into.
			ht.s.opts.FuncHeadroom = min(ht.s.opts.FuncHeadroom, h.slotFuncs-len(ht.s.fnames()))
			err = h.attach(ht)
		}
		if err != nil {
			h.unclaim(ht.t)
			h.endUnattached(ht, err)
			g.added = slices.Clone(g.added[i+1:])
			g.abortHeld()
			return run, fmt.Errorf("%s: %w", ht.t, err)
		}
		ht.p = ht.s.startTracing()
		h.targets = append(h.targets, ht)
		h.reloadSlots--
		h.watchExit(ht)
		run = append(run, ht)
		h.log.Info("target added by a reload", "target", ht.t.String(), "binary", ht.s.sess.Binary, "session", ht.s.sess.ID,
			"functions", len(ht.s.fnames()), "reserved_left", h.reloadSlots)
	}
	g.added = nil
	return run, nil
}
