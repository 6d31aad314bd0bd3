package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/selector"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// ErrNotInPlace means a change cannot be applied to the running agent:
// the caller stops it and starts a new one (the daemon's reload does).
var ErrNotInPlace = errors.New("this change needs a new session")

// ErrReplaced, as the cause of the context a session runs under
// (context.WithCancelCause), ends it with the exit reason "replaced by a
// reload" rather than "interrupted": the daemon cancels a running set so
// when a reload restarts it.
var ErrReplaced = errors.New("replaced by a reload")

// stopReason is the exit reason of a session whose ctx is done.
func stopReason(ctx context.Context) string {
	if errors.Is(context.Cause(ctx), ErrReplaced) {
		return ErrReplaced.Error()
	}
	return "interrupted"
}

// Control changes the selection of a running agent in place: the same
// sessions go on, with the same probes for what stays selected, while
// functions are added and removed (the daemon's reload). Give one in
// Options.Control; its zero value is ready. The agent registers its
// targets with it once every probe is live, and takes them out before it
// detaches them.
type Control struct {
	mu      sync.Mutex
	targets []controlled
	// drop, set by a host, ends the sessions of a target a reload
	// removes; nil where the agent runs one target without a host.
	drop func(Target)
	// grow, set by a host, prepares targets a reload adds (host.grow).
	grow func([]Target) (*growth, error)
}

// ExitRemoved is the exit reason of the session of a target that a reload
// removed while the others went on.
const ExitRemoved = "removed by reload"

// dropper registers the host's drop.
func (c *Control) dropper(drop func(Target)) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop = drop
}

// grower registers the host's grow.
func (c *Control) grower(grow func([]Target) (*growth, error)) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.grow = grow
}

// hold locks c until the returned func is called, for a caller that
// registers sessions (addHeld) under a lock of its own: c's lock is always
// taken first, as Update, which calls into the host, takes them.
func (c *Control) hold() func() {
	if c == nil {
		return func() {}
	}
	c.mu.Lock()
	return c.mu.Unlock
}

// controlled is a running target: its Target as given, and the sessions
// that trace it (one, or one per program of a cgroup target).
type controlled struct {
	t Target
	s []*session
	// retarget, for a cgroup target, gives its watch the new patterns,
	// which the programs it finds later are traced with.
	retarget func(Target)
}

// watch registers a cgroup target, whose sessions come and go with the
// programs its processes run.
func (c *Control) watch(t Target, retarget func(Target)) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.targets = append(c.targets, controlled{t: t, retarget: retarget})
}

// add registers the sessions of t.
func (c *Control) add(t Target, s *session) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addHeld(t, s)
}

// addHeld is add with c held (hold).
func (c *Control) addHeld(t Target, s *session) {
	if c == nil {
		return
	}
	for i := range c.targets {
		if sameTarget(c.targets[i].t, t) {
			c.targets[i].s = append(c.targets[i].s, s)
			return
		}
	}
	c.targets = append(c.targets, controlled{t: t, s: []*session{s}})
}

// remove takes s out, before its probes are detached: once it returns,
// no Update touches s.
func (c *Control) remove(s *session) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.targets {
		c.targets[i].s = slices.DeleteFunc(c.targets[i].s, func(x *session) bool { return x == s })
	}
}

// sameTarget reports whether a and b trace the same thing, whatever their
// patterns.
func sameTarget(a, b Target) bool {
	return a.PID == b.PID && a.Exe == b.Exe && a.Cgroup == b.Cgroup
}

// Update applies targets to the running agent, in any order. For a
// target it runs only the patterns (Include, Exclude) and the sample rate
// may differ: each session kept goes on, functions no longer selected
// stop being traced, new ones start, the others keep their probes (a call
// of a kept function is never missed), and a new sample rate applies to
// the next calls. A target left out is detached and its session rows
// ended with ExitRemoved; the others go on. A file, pid or cgroup target
// it does not run is attached beside the running ones, with a session
// row of its own (a cgroup's: one per Go program its processes run), in
// tracers the budget reserved for it (Options.ReloadTargets; hostgrow.go);
// the running sessions and their probes are not touched. Removing and
// adding need a host (an agent started with several targets, a cgroup,
// or ReloadTargets). It returns ErrNotInPlace (and changes nothing) when
// there is none, for added targets that need more tracers than reserved
// ones are left, or for a target that would need more functions than a
// tracer has room for; the caller then restarts the agent.
func (c *Control) Update(targets []Target, opts Options) (took time.Duration, err error) {
	start := time.Now()
	if err := checkTargets(targets); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	type change struct {
		s *session
		u *update
	}
	var plan []change
	var added []Target
	kept := make([]bool, len(c.targets))
	for _, t := range targets {
		i := slices.IndexFunc(c.targets, func(x controlled) bool { return sameTarget(x.t, t) })
		if i < 0 {
			added = append(added, t)
			continue
		}
		kept[i] = true
		for _, s := range c.targets[i].s {
			u, err := s.planUpdate(t.options(opts))
			if err != nil {
				return 0, fmt.Errorf("%s: %w", t, err)
			}
			plan = append(plan, change{s, u})
		}
	}
	var gone []Target
	for i, k := range kept {
		if !k {
			gone = append(gone, c.targets[i].t)
		}
	}
	if len(gone) > 0 && c.drop == nil {
		return 0, fmt.Errorf("%w: %s is removed from an agent that runs one target without a host", ErrNotInPlace, gone[0])
	}
	var g *growth
	if len(added) > 0 {
		if c.grow == nil {
			return 0, fmt.Errorf("%w: %s is added to an agent that runs one target without a host (no tracer reserved for targets a reload adds)", ErrNotInPlace, added[0])
		}
		if g, err = c.grow(added); err != nil {
			return 0, err
		}
	}
	// Every plan fits: apply them. A failure now leaves the sessions
	// updated so far as they are (each is consistent on its own).
	for _, ch := range plan {
		if err := ch.s.applyUpdate(ch.u); err != nil {
			if g != nil {
				g.abort()
			}
			return time.Since(start), err
		}
	}
	for _, t := range targets {
		j := slices.IndexFunc(c.targets, func(x controlled) bool { return sameTarget(x.t, t) })
		if j < 0 {
			continue // added below
		}
		c.targets[j].t = t
		if c.targets[j].retarget != nil {
			c.targets[j].retarget(t)
		}
	}
	if g != nil {
		run, err := g.commit()
		c.targets = append(c.targets, run...)
		if err != nil {
			return time.Since(start), err
		}
	}
	for _, t := range gone {
		// drop ends the sessions, which take themselves out (remove):
		// with c.mu held, so not through remove.
		i := slices.IndexFunc(c.targets, func(x controlled) bool { return sameTarget(x.t, t) })
		c.targets = slices.Delete(c.targets, i, i+1)
		c.mu.Unlock()
		c.drop(t)
		c.mu.Lock()
	}
	return time.Since(start), nil
}

// update is a planned change of one session's selection.
type update struct {
	opts  Options
	sel   *selector.Selection
	names []string      // the whole function table, grown
	funcs []uprobe.Func // the tracer's function table, grown
	off   map[int]bool  // ids no longer selected
	added []string      // names new to the table
	// same: the selection is the one in force, function for function and
	// rate for rate (the patterns may be written differently): nothing
	// to switch.
	same bool
}

// planUpdate selects the functions of opts in the session's binary and
// lays out the grown function table; nothing changes yet.
func (s *session) planUpdate(opts Options) (*update, error) {
	selOpts := selector.DefaultOptions()
	if opts.MaxProbes != 0 {
		selOpts.MaxProbes = opts.MaxProbes
	}
	selOpts.SampleRate = opts.SampleRate
	sel, err := selector.Select(s.bin, opts.Include, opts.Exclude, selOpts)
	if err != nil {
		return nil, err
	}
	if len(sel.Funcs) == 0 {
		return nil, errors.New("the patterns select no function that can be probed")
	}
	u := &update{opts: opts, sel: sel, names: slices.Clone(s.fnames()), funcs: slices.Clone(s.ufuncs), off: map[int]bool{}}
	ids := make(map[string]int, len(u.names))
	for i, n := range u.names {
		ids[n] = i
		u.off[i] = true
	}
	for _, f := range sel.Funcs {
		uf, err := s.probeFunc(f)
		if err != nil {
			return nil, err
		}
		id, ok := ids[f.Func.Name]
		if !ok {
			id = len(u.names)
			ids[f.Func.Name] = id
			u.names = append(u.names, f.Func.Name)
			u.funcs = append(u.funcs, uf)
			u.added = append(u.added, f.Func.Name)
			continue
		}
		u.funcs[id] = uf // a new sample rate
		delete(u.off, id)
	}
	u.same = sameSelection(s.sel, sel)
	if n := len(u.funcs); n > s.tr.Capacity() {
		return nil, fmt.Errorf("%w: %d functions in all, more than the %d its tracer's maps hold", ErrNotInPlace, n, s.tr.Capacity())
	}
	return u, nil
}

// applyUpdate puts a planned selection in force: the new functions are
// registered and named before any of their records can exist, then the
// tracer switches its sites (uprobe.Tracer.Update).
func (s *session) applyUpdate(u *update) error {
	if u.same {
		// A target a reload keeps as it is (say, while another is added
		// or removed) keeps its probes and generation untouched.
		s.opts.Include, s.opts.Exclude, s.opts.SampleRate = u.opts.Include, u.opts.Exclude, u.opts.SampleRate
		return nil
	}
	if err := s.registerFunctions(u.added); err != nil {
		return err
	}
	s.names.Store(&u.names)
	took, err := s.tr.Update(u.funcs, u.off)
	if err != nil {
		return err
	}
	s.ufuncs, s.sel = u.funcs, u.sel
	s.opts.Include, s.opts.Exclude, s.opts.SampleRate = u.opts.Include, u.opts.Exclude, u.opts.SampleRate
	s.result.Functions = len(u.sel.Funcs)
	s.result.Sites = s.tr.Sites()
	s.probes.sites.Store(int64(s.tr.Sites()))
	s.log.Info("selection changed in place", "session", s.sess.ID, "functions", len(u.sel.Funcs),
		"added", len(u.added), "removed", len(u.off), "sites", s.tr.Sites(), "patterns", strings.Join(u.opts.Include, " "),
		"switch_took", took.Round(time.Microsecond))
	return nil
}

// sameSelection reports whether two selections trace the same functions
// at the same rates.
func sameSelection(a, b *selector.Selection) bool {
	return a != nil && slices.EqualFunc(a.Funcs, b.Funcs, func(x, y selector.Selected) bool {
		return x.Func.Name == y.Func.Name && x.SampleRate == y.SampleRate
	})
}

// fnames is the function table: id -> name.
func (s *session) fnames() []string { return *s.names.Load() }

// fname is the name of function id.
func (s *session) fname(id int) string {
	if names := s.fnames(); id < len(names) {
		return names[id]
	}
	return fmt.Sprintf("unknown#%d", id)
}

// capacity is how many functions the session's per-function maps are
// sized for: those selected, plus Options.FuncHeadroom for functions a
// reload adds.
func (s *session) capacity() int { return len(s.fnames()) + s.opts.FuncHeadroom }

// registerFunctions records the packages and modules of functions.
func (s *session) registerFunctions(names []string) error {
	if len(names) == 0 {
		return nil
	}
	fns := make([]record.Function, len(names))
	for i, n := range names {
		pkg := record.PackageOf(n)
		fns[i] = record.Function{Name: n, Package: pkg, Module: s.bin.ModuleOf(pkg)}
	}
	if err := s.st.RegisterFunctions(fns); err != nil {
		return fmt.Errorf("register functions: %w", err)
	}
	return nil
}

// probeFunc turns a selected function into the tracer's sites.
func (s *session) probeFunc(sel selector.Selected) (uprobe.Func, error) {
	f := sel.Func
	entry, err := s.bin.FileOffset(f.Entry)
	if err != nil {
		return uprobe.Func{}, fmt.Errorf("%s: %w", f.Name, err)
	}
	rets, err := s.fileOffsets(f.Rets)
	if err != nil {
		return uprobe.Func{}, fmt.Errorf("%s: %w", f.Name, err)
	}
	uf := uprobe.Func{Entry: entry, Rets: rets, SampleRate: sel.SampleRate, EntryAddr: f.Entry}
	if er := f.ErrResult; er != nil {
		if er.InRegs {
			uf.Err = uprobe.ErrorLoc{Mode: uprobe.ErrInRegs, ItabReg: uint8(er.ItabReg), DataReg: uint8(er.DataReg)}
		} else {
			uf.Err = uprobe.ErrorLoc{Mode: uprobe.ErrOnStack, StackOff: int32(er.StackOff)}
		}
	}
	return uf, nil
}

// retireEvery is how often the RET sites of removed functions are taken
// out once their last open call has returned.
const retireEvery = time.Second

// retireLoop takes out, every retireEvery, the RET sites that removed
// functions no longer need (uprobe.Tracer.Retire), and keeps the count of
// attached sites that /metrics shows in step.
func (s *session) retireLoop(ctx context.Context) {
	periodically(ctx, retireEvery, func() {
		if _, err := s.tr.Retire(); err != nil && !errors.Is(err, uprobe.ErrDetached) {
			s.log.Warn("retire the probes of removed functions", "err", err)
		}
		s.probes.sites.Store(int64(s.tr.Sites()))
	})
}
