package agent

import (
	"fmt"
	"slices"
)

// A reload that adds targets (Control.Update) attaches them beside the
// running ones, as a cgroup's watch attaches the programs its processes
// start later: each added target gets a tracer the budget reserved at
// start (Options.ReloadTargets, planBudget), sized as a cgroup's reserved
// tracer (rings and maps a 1/n share, maps for slotFuncs functions). An
// added cgroup target takes one for each Go program its processes run
// now, and its watch one for each it starts later (the reserve is shared
// with the cgroups' own, discover). The running targets' sessions, probes
// and rings are not touched. With no reserved tracer left, or a target
// that selects more functions than one holds, the add is refused with
// ErrNotInPlace and the caller restarts the agent, which plans its budget
// anew.

// growth is the targets a reload adds, read and selected but not attached
// yet.
type growth struct {
	h     *host
	added []*hosted
	// watches are the added cgroup targets; their programs now are in
	// added.
	watches []*cgWatch
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
	// Before any binary is read: each file or pid target needs a tracer
	// (a cgroup one per program it runs now, counted once they are known).
	if n := len(ts) - countCgroups(ts); n > h.reloadSlots {
		return nil, fmt.Errorf("%w: %d targets added, and the memory budget has %d tracers left of the %d it reserved at start for targets a reload adds (limits.reload_targets)",
			ErrNotInPlace, n, h.reloadSlots, h.opts.ReloadTargets)
	}
	g := &growth{h: h}
	for _, t := range ts {
		err := g.prepare(t)
		if err == nil && len(g.added) > h.reloadSlots {
			err = fmt.Errorf("%w: the added targets run %d programs, and the memory budget has %d tracers left of the %d it reserved at start for targets a reload adds (limits.reload_targets)",
				ErrNotInPlace, len(g.added), h.reloadSlots, h.opts.ReloadTargets)
		}
		if err != nil {
			g.abortHeld()
			return nil, fmt.Errorf("%s: %w", t, err)
		}
	}
	return g, nil
}

// countCgroups is how many of ts are cgroup targets.
func countCgroups(ts []Target) int {
	n := 0
	for _, t := range ts {
		if t.Cgroup != "" {
			n++
		}
	}
	return n
}

// prepare reads and selects one added target (h.mu held), or each Go
// program a cgroup target's processes run now.
func (g *growth) prepare(t Target) error {
	h := g.h
	if t.Cgroup == "" {
		ht, err := h.prepareAdded(t)
		if ht != nil {
			g.added = append(g.added, ht)
		}
		if err != nil {
			return err
		}
		return g.fits(ht)
	}
	w, err := h.openWatch(t, func(ht *hosted) error {
		g.added = append(g.added, ht)
		return g.fits(ht)
	})
	if w != nil {
		g.watches = append(g.watches, w)
	}
	return err
}

// fits refuses a target whose selection a reserved tracer's maps cannot
// hold.
func (g *growth) fits(ht *hosted) error {
	if err := g.h.overReserved(ht); err != nil {
		return fmt.Errorf("%w: %w", ErrNotInPlace, err)
	}
	return nil
}

// prepareAdded reads and selects one added target (h.mu held). What it
// returns, even with an error, is released by abortHeld.
func (h *host) prepareAdded(t Target) (*hosted, error) {
	if t.PID != 0 {
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
	g.added, g.watches = nil, nil
}

// commit attaches the prepared targets, each with a session row of its
// own, starts tracing them and the added cgroups' watches; the running
// targets go on untouched. It returns what runs, as Control registers it;
// on an error the one that failed has its row ended ("could not start")
// and those not tried yet are released.
func (g *growth) commit() ([]controlled, error) {
	h := g.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		g.abortHeld()
		return nil, fmt.Errorf("%w: the agent is ending", ErrNotInPlace)
	}
	var run []controlled
	for _, w := range g.watches {
		// The watch is registered first: its programs' sessions join it.
		h.watches = append(h.watches, w)
		h.startWatch(w)
		run = append(run, controlled{t: w.t, retarget: h.retarget(w)})
		h.log.Info("cgroup target added by a reload", "cgroup", w.t.Cgroup, "reserved_left", h.reloadSlots)
	}
	g.watches = nil
	for i, ht := range g.added {
		if err := h.startReserved(ht); err != nil {
			h.unclaim(ht.t)
			h.endUnattached(ht, err)
			g.added = slices.Clone(g.added[i+1:])
			g.abortHeld()
			return run, fmt.Errorf("%s: %w", ht.t, err)
		}
		h.reloadSlots--
		h.watchExit(ht)
		if j := slices.IndexFunc(run, func(c controlled) bool { return sameTarget(c.t, ht.t) }); j >= 0 {
			run[j].s = append(run[j].s, ht.s) // a program of an added cgroup
		} else {
			run = append(run, controlled{t: ht.t, s: []*session{ht.s}})
		}
		h.log.Info("target added by a reload", "target", ht.t.String(), "binary", ht.s.sess.Binary, "session", ht.s.sess.ID,
			"functions", len(ht.s.fnames()), "reserved_left", h.reloadSlots)
	}
	g.added = nil
	return run, nil
}
