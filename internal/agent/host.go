package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/obs-agent/obs-agent/internal/metrics"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// Target is one thing AttachTargets traces: a running process, every
// process of an executable file, or every process of a cgroup. Exactly one
// of PID, Exe and Cgroup is set.
type Target struct {
	// PID is a running process, traced until it exits (attach --pid).
	PID int
	// Exe is an executable file: every process that runs it, now or
	// later, is traced (attach --exe).
	Exe string
	// Cgroup is a cgroup v2 directory: the Go executables its processes
	// (and its descendants') run, at start or later (a watch looks every
	// second), are traced as Exe is, but only in processes of the cgroup
	// (attach --cgroup).
	Cgroup string
	// Include and Exclude, when not nil, replace Options.Include and
	// Options.Exclude for this target.
	Include, Exclude []string
	// SampleRate, when not nil, replaces Options.SampleRate (--sample)
	// for this target's patterns without @RATE.
	SampleRate *float64
}

func (t Target) String() string {
	switch {
	case t.Exe != "":
		return "--exe " + t.Exe
	case t.Cgroup != "":
		return "--cgroup " + t.Cgroup
	}
	return fmt.Sprintf("--pid %d", t.PID)
}

// options are the session options of the target.
func (t Target) options(opts Options) Options {
	if t.Include != nil {
		opts.Include = t.Include
	}
	if t.Exclude != nil {
		opts.Exclude = t.Exclude
	}
	if t.SampleRate != nil {
		opts.SampleRate = *t.SampleRate
	}
	return opts
}

// AttachTargets traces several targets in one agent, until ctx is done,
// opts.Duration passes, or every target has exited (a file target never
// exits by itself). One target is Attach or AttachExe.
//
// Several targets share one host: one store, one store sink (its queue,
// writer and spill journal), with --otlp-endpoint one OTLP sink (its queue
// and ledger; each span keeps the resource of its own program), with
// --metrics-listen one /metrics endpoint (each function labelled by its
// binary), one memory budget and the retention pass.
// Each target keeps what is tied to its binary: its own selection, probes,
// rings and maps (a tracer of its own), symbol table, converter, follower
// (a file target), session row (so its call ids, based on the row's id,
// never collide with another target's) and aggregates. Records keep the
// host pid; `query processes` lists the processes of every target.
//
// A pid target that exits is detached and its session row closed, while
// the others go on. A process is never traced twice: a --pid whose
// executable is an --exe target's file, the same file or pid given twice,
// or cgroup targets that overlap on a file, are refused.
func AttachTargets(ctx context.Context, targets []Target, opts Options) (*Result, error) {
	if err := checkTargets(targets); err != nil {
		return nil, err
	}
	// One target runs without a host, unless tracers are reserved for
	// targets a reload adds: only a host can add them.
	if t := targets[0]; len(targets) == 1 && t.Cgroup == "" && opts.ReloadTargets == 0 {
		opts.ctlTarget = t
		if t.Exe != "" {
			return AttachExe(ctx, t.Exe, t.options(opts))
		}
		return Attach(ctx, t.PID, t.options(opts))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	h := &host{opts: opts, log: opts.Logger.With("component", "host"), files: map[fileID][]claimant{}}
	defer h.close()
	// The files first, so that a file given twice is refused before
	// anything is read.
	for _, t := range targets {
		if t.Exe == "" {
			continue
		}
		_, st, err := checkExe(t.Exe)
		if err != nil {
			return nil, err
		}
		if err := h.claim(fileID{uint64(st.Dev), st.Ino}, claimant{t: t}); err != nil {
			return nil, err
		}
	}
	for _, t := range targets {
		var err error
		switch {
		case t.Exe != "":
			var ht *hosted
			if ht, err = h.addExe(t); err == nil {
				h.targets = append(h.targets, ht)
			}
		case t.PID != 0:
			var ht *hosted
			ht, err = h.addPID(t)
			if ht != nil {
				h.targets = append(h.targets, ht) // released by close
			}
		default:
			err = h.addCgroup(t)
		}
		if err != nil {
			return nil, err
		}
	}
	return h.run(ctx)
}

// checkTargets wants at least one target, each a pid or a file, and no pid
// twice.
func checkTargets(targets []Target) error {
	if len(targets) == 0 {
		return errors.New("no target: give --pid PID or --exe PATH")
	}
	pids := map[int]bool{}
	for _, t := range targets {
		n := 0
		for _, set := range []bool{t.PID != 0, t.Exe != "", t.Cgroup != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("target %+v: give exactly one of a pid, an executable and a cgroup", t)
		}
		if t.PID < 0 {
			return fmt.Errorf("invalid pid %d", t.PID)
		}
		if t.PID != 0 {
			if pids[t.PID] {
				return fmt.Errorf("--pid %d is given twice: give each process once", t.PID)
			}
			pids[t.PID] = true
		}
	}
	return nil
}

// host runs the targets of AttachTargets.
type host struct {
	opts    Options
	log     *slog.Logger
	targets []*hosted
	// files are the targets' executable files, to refuse a process traced
	// twice.
	files map[fileID][]claimant
	st    *store.Store
	store *storeSink
	// sinks are the store sink, and the OTLP sink (otlp) when there is
	// one: every target's records go to them all.
	sinks  fanout
	otlp   *otlpSink
	counts []*sessionCounts // what each sink wrote, per session
	budget *Budget
	// base holds the host's own store work (open, sink, retention): a
	// session with no target of its own.
	base *session
	// mu guards targets, files and slots once the host runs: cgroup
	// watchers add targets as their processes start new programs.
	mu      sync.Mutex
	watches []*cgWatch
	// slots is how many more tracers the budget has room for (cgroupSlots
	// per cgroup target), each with maps for up to slotFuncs functions;
	// reloadSlots how many more it has for targets a reload adds
	// (Options.ReloadTargets, grow), each the same size.
	slots, slotFuncs, reloadSlots int
	// closing: the host ends, and a reload adds no target (mu).
	closing bool
	// stopWait ends the goroutines that wait for targets to exit, once
	// the host ends.
	stopWait chan struct{}
	// watchCtx ends the cgroups' watches (watching), those a reload adds
	// included.
	watchCtx context.Context
	watching sync.WaitGroup
	// shed is what the store sink had dropped at the last aggregates
	// (writeShed).
	shed     map[string]uint64
	shedTime int64
}

// hosted is one target of a host.
type hosted struct {
	t    Target
	s    *session
	tgt  target
	proc *process // a pid target's process, nil for a file
	lock *targetLock
	// file holds a cgroup target's executable open: it is attached and
	// read through /proc/self/fd, whatever becomes of the process that
	// showed it.
	file *os.File
	p    *pipeline
	once sync.Once
	done chan struct{} // closed once the target is detached and finished
	// mu guards the tracer's end against a scrape of /metrics, which
	// reads final once the target has ended.
	mu    sync.Mutex
	final *metrics.Snapshot
}

type fileID struct{ dev, ino uint64 }

// addExe reads a file target's binary and selects its functions.
func (h *host) addExe(t Target) (*hosted, error) {
	abs, st, err := checkExe(t.Exe)
	if err != nil {
		return nil, err
	}
	if err := refuseSelf(0, abs); err != nil {
		return nil, err
	}
	return h.addFile(t, abs, abs, fileID{uint64(st.Dev), st.Ino}, nil)
}

// addFile makes a target for every process of one file (of a cgroup, when
// cg is set): open is a path that opens the file, name the one rows show.
func (h *host) addFile(t Target, open, name string, id fileID, cg *cgroup) (*hosted, error) {
	s, err := selectFuncs(t.options(h.opts), open)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	ht := &hosted{t: t, s: s, done: make(chan struct{})}
	s.follow = newFollower(s, name, id.dev, id.ino, buildID(open))
	s.follow.scope = cg
	s.cgroup, s.binName = cg, name
	ht.tgt = &fileTarget{path: open, done: make(chan struct{})}
	h.share(ht)
	return ht, nil
}

// addPID reads a pid target's binary and selects its functions. On an
// error, what it returns (when not nil) holds what must be released
// (close1).
func (h *host) addPID(t Target) (*hosted, error) {
	p, err := openProcess(t.PID)
	if err != nil {
		return nil, err
	}
	ht := &hosted{t: t, proc: p, tgt: p, done: make(chan struct{})}
	if err := refuseSelf(t.PID, p.exe); err != nil {
		return ht, err
	}
	if ht.lock, err = lockTarget(t.PID); err != nil {
		return ht, err
	}
	if ht.s, err = prepareExe(t.options(h.opts), p, selectFuncs); err != nil {
		return ht, fmt.Errorf("%s: %w", t, err)
	}
	st := p.parsed.Sys().(*syscall.Stat_t)
	if err := h.claim(fileID{st.Dev, st.Ino}, claimant{t: t}); err != nil {
		return ht, err
	}
	h.share(ht)
	return ht, nil
}

// cgroupSlots is how many programs started later in a cgroup the budget
// reserves room for, per cgroup target; minSlotFuncs the fewest functions
// each reserved tracer's maps are sized for.
const (
	cgroupSlots  = 4
	minSlotFuncs = 1024
)

// cgWatch is a cgroup target: the files of its processes already seen
// (traced or skipped).
type cgWatch struct {
	t     Target
	cg    *cgroup
	known map[fileID]bool
	// dropped: a reload removed the target (h.mu).
	dropped bool
}

// addCgroup adds a file target, limited to the cgroup, for each Go
// executable its processes run now, and a watch that adds those they start
// later (watch). Files that cannot be traced (not Go, no function the
// patterns select, obs-agent itself) are skipped and logged.
func (h *host) addCgroup(t Target) error {
	added := 0
	w, err := h.openWatch(t, func(ht *hosted) error {
		h.targets = append(h.targets, ht)
		added++
		return nil
	})
	if w != nil {
		h.watches = append(h.watches, w)
	}
	if err != nil {
		return err
	}
	if added == 0 {
		h.log.Warn("cgroup: no process of it runs a Go program to trace yet; its new programs are looked for every second", "cgroup", t.Cgroup)
	}
	return nil
}

// openWatch makes the watch of a cgroup target and a file target of each
// Go executable its processes run now, which it gives to add (which takes
// what it is given, even when it returns an error). Files that cannot be
// traced are skipped and logged; a file another target traces is refused.
func (h *host) openWatch(t Target, add func(*hosted) error) (*cgWatch, error) {
	cg, err := openCgroup(t.Cgroup)
	if err != nil {
		return nil, err
	}
	w := &cgWatch{t: t, cg: cg, known: map[fileID]bool{}}
	files, err := cg.files()
	if err != nil {
		return w, fmt.Errorf("--cgroup %s: list its processes: %w", t.Cgroup, err)
	}
	for _, f := range files {
		ht, err := h.addCgroupFile(w, f)
		var ov *overlapError
		switch {
		case errors.As(err, &ov):
			return w, err
		case err != nil:
			h.log.Info("cgroup: file not traced", "cgroup", t.Cgroup, "file", f.name, "reason", err)
		default:
			if err := add(ht); err != nil {
				return w, err
			}
		}
	}
	return w, nil
}

// addCgroupFile makes the target of one file of a cgroup, held open: the
// process that showed it may exit.
func (h *host) addCgroupFile(w *cgWatch, f cgroupFile) (*hosted, error) {
	w.known[f.id] = true
	if err := refuseSelf(0, f.open); err != nil {
		return nil, err
	}
	if err := h.claim(f.id, claimant{t: w.t, cg: w.cg}); err != nil {
		return nil, err
	}
	fh, err := os.Open(f.open)
	if err != nil {
		return nil, err
	}
	open := fmt.Sprintf("/proc/self/fd/%d", fh.Fd())
	ht, err := h.addFile(w.t, open, f.name, f.id, w.cg)
	if err != nil {
		fh.Close()
		return nil, err
	}
	ht.file = fh
	return ht, nil
}

// retarget gives w's watch the patterns a reload sets, which the programs
// it finds later are traced with.
func (h *host) retarget(w *cgWatch) func(Target) {
	return func(t Target) {
		h.mu.Lock()
		defer h.mu.Unlock()
		// Only the patterns: the cgroup is the same, and is read
		// without the lock.
		w.t.Include, w.t.Exclude, w.t.SampleRate = t.Include, t.Exclude, t.SampleRate
	}
}

// startWatch runs w's watch until the host ends (h.mu held, or before a
// reload can add targets).
func (h *host) startWatch(w *cgWatch) {
	h.watching.Add(1)
	go func() {
		defer h.watching.Done()
		h.watch(h.watchCtx, w)
	}()
}

// watch adds, every scanEvery, a target for each Go program the cgroup's
// processes run that it has not seen yet. Its first processes run untraced
// until the probes are in (about a second or two); every later process of
// the file is traced from its first instruction.
func (h *host) watch(ctx context.Context, w *cgWatch) {
	periodically(ctx, scanEvery, func() { h.discover(w) })
}

// discover attaches the files of the cgroup's processes not seen yet.
func (h *host) discover(w *cgWatch) {
	files, err := w.cg.files()
	if err != nil {
		h.log.Warn("cgroup: list its processes", "cgroup", w.t.Cgroup, "err", err)
		return
	}
	// Control's lock first, as Control.Update takes them: a program
	// found here is registered with its patterns of now, which no reload
	// changes meanwhile.
	defer h.opts.Control.hold()()
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.dropped {
		return
	}
	for _, f := range files {
		if w.known[f.id] {
			continue
		}
		if h.slots == 0 && h.reloadSlots == 0 {
			w.known[f.id] = true
			h.log.Warn("cgroup: a new program is not traced: the memory budget has no tracer left for it (each --cgroup reserves room for a few programs started later); restart the agent to include it",
				"cgroup", w.t.Cgroup, "file", f.name, "reserved", cgroupSlots*len(h.watches))
			continue
		}
		ht, err := h.addCgroupFile(w, f)
		if err == nil {
			if err = h.overReserved(ht); err != nil {
				h.close1(ht)
				err = fmt.Errorf("%w: narrow the -f patterns", err)
			}
		}
		if err != nil {
			h.log.Info("cgroup: file not traced", "cgroup", w.t.Cgroup, "file", f.name, "reason", err)
			continue
		}
		if err := h.startReserved(ht); err != nil {
			h.endUnattached(ht, err)
			h.log.Warn("cgroup: attach to a new program", "cgroup", w.t.Cgroup, "file", f.name, "err", err)
			continue
		}
		h.opts.Control.addHeld(ht.t, ht.s)
		// A cgroup's reserved tracers first; then one reserved for
		// reloads (a cgroup a reload added has none of its own).
		if h.slots > 0 {
			h.slots--
		} else {
			h.reloadSlots--
		}
		h.log.Info("cgroup: tracing a program its processes started", "cgroup", w.t.Cgroup, "file", f.name, "session", ht.s.sess.ID)
	}
}

// overReserved refuses a target whose selection a reserved tracer's maps
// cannot hold.
func (h *host) overReserved(ht *hosted) error {
	if n := len(ht.s.fnames()); n > h.slotFuncs {
		return fmt.Errorf("%d functions selected, more than the %d a reserved tracer's maps hold", n, h.slotFuncs)
	}
	return nil
}

// startReserved attaches a target found or added while the host runs (a
// program a cgroup started, a target a reload added) in a tracer the
// budget reserved, and starts tracing it (h.mu held). The caller takes
// the reserved tracer from its count, and on an error ends the target's
// row (endUnattached).
func (h *host) startReserved(ht *hosted) error {
	ht.s.budget = h.budget
	// The reserved tracer's maps hold slotFuncs functions: what the
	// selection leaves is the room a reload may add into.
	ht.s.opts.FuncHeadroom = min(ht.s.opts.FuncHeadroom, h.slotFuncs-len(ht.s.fnames()))
	if err := h.attach(ht); err != nil {
		return err
	}
	ht.p = ht.s.startTracing()
	h.targets = append(h.targets, ht)
	return nil
}

// endUnattached closes the session row of a target whose probes could not
// go in, and releases it.
func (h *host) endUnattached(ht *hosted, cause error) {
	s := ht.s
	if s.sess.ID != 0 {
		s.sess.End, s.sess.ExitReason = time.Now().UnixNano(), "could not start: "+cause.Error()
		if err := h.st.EndSession(s.sess); err != nil {
			h.log.Warn("store the end of a session that could not start", "session", s.sess.ID, "err", err)
		}
	}
	h.close1(ht)
}

// share marks a target's session as one of the host's.
func (h *host) share(ht *hosted) {
	ht.s.shared = true
	// Sized for the functions an in-place update may add (capacity).
	n := ht.s.capacity()
	ht.s.handed = make([]atomic.Uint64, n)
	ht.s.handedErr = make([]atomic.Uint64, n)
}

// claimant is a target that traces a file, with its cgroup for a cgroup
// target.
type claimant struct {
	t  Target
	cg *cgroup
}

// claim notes that c traces the file id, refusing what would record a
// process twice: the probes of an --exe target take every process of the
// file; a cgroup target's take those of its cgroup, which may hold a --pid
// target or nest in another cgroup target. Processes of one file given by
// --pid each are fine: each has its own pid filter.
func (h *host) claim(id fileID, c claimant) error {
	for _, o := range h.files[id] {
		if overlap(o, c) {
			return &overlapError{o.t, c.t}
		}
	}
	h.files[id] = append(h.files[id], c)
	return nil
}

// unclaim takes out the claims of t (a target removed, or one a reload
// could not add).
func (h *host) unclaim(t Target) {
	for id, cs := range h.files {
		h.files[id] = slices.DeleteFunc(cs, func(c claimant) bool { return sameTarget(c.t, t) })
	}
}

// overlapError refuses two targets that would trace one process.
type overlapError struct{ a, b Target }

func (e *overlapError) Error() string {
	return fmt.Sprintf("%s and %s trace the same executable file, and some of its processes would be recorded twice; give the file once with --exe, which traces all its processes, or targets that do not overlap", e.a, e.b)
}

// overlap reports whether two targets of one file may trace one process.
func overlap(a, b claimant) bool {
	switch {
	case a.t.Exe != "" || b.t.Exe != "":
		return true
	case a.cg != nil && b.cg != nil:
		return a.cg.rel == "/" || b.cg.rel == "/" || a.cg.rel == b.cg.rel ||
			strings.HasPrefix(a.cg.rel, b.cg.rel+"/") || strings.HasPrefix(b.cg.rel, a.cg.rel+"/")
	case a.cg != nil:
		return a.cg.holds(uint32(b.t.PID))
	case b.cg != nil:
		return b.cg.holds(uint32(a.t.PID))
	}
	return false
}

// planBudget shares one memory limit among the targets: one store, one
// queue and one SQLite cache, and per target its own programs, rings and
// maps, each target's rings and maps a 1/n share of what one target would
// get.
func (h *host) planBudget() error {
	h.slots = cgroupSlots * len(h.watches)
	h.reloadSlots = h.opts.ReloadTargets
	reserved := h.slots + h.reloadSlots
	n := len(h.targets) + reserved
	total := 0
	h.slotFuncs = minSlotFuncs
	for _, ht := range h.targets {
		total += ht.s.capacity()
		h.slotFuncs = max(h.slotFuncs, ht.s.capacity())
	}
	total += reserved * h.slotFuncs
	limit := cmp.Or(h.opts.MemoryLimit, DefaultMemoryLimit)
	// Each tracer has its own programs and the maps that do not scale
	// with the limit: those of all but the first come off the limit
	// before it is shared out. The maps of n tracers a 1/n share each
	// round differently from one tracer's (hash tables grow by powers of
	// two), so what the plan overshoots is taken off again, twice at most.
	small := uprobe.Sizes{RingOK: 1 << 16, RingErr: 1 << 16, Goroutines: 1, Frames: 1, GoroutineSlots: 1}
	k0, err := uprobe.EstimateKernelMemory(0, small)
	if err != nil {
		return err
	}
	programs := int64(n-1) * programsAllowance
	// With OTLP, each program's session has encoders of its own, one per
	// request in flight (otlpsink.go); one program's are in workAllowance.
	var encoders int64
	if o := h.opts.OTLP; o != nil {
		encoders = int64(min(n, maxEncoders)-1) * int64(cmp.Or(o.Requests, DefaultOTLPRequests)) * encoderAllowance
	}
	base := goMemoryInUse()
	var b *Budget
	for over := int64(0); ; {
		if b, err = planBudget(limit-programs-encoders-int64(n-1)*k0.Total()-over, base, total, h.opts.QueueBytes, h.opts.OTLP != nil); err != nil {
			return fmt.Errorf("%d tracers (%d reserved for programs cgroups start later, %d for targets a reload adds), each with its own BPF programs (%s each) and maps: %w", n, h.slots, h.reloadSlots, mib(programsAllowance), err)
		}
		b.Limit, b.Programs, b.Work = limit, b.Programs+programs, b.Work+encoders
		b.Sizes = splitSizes(b.Sizes, n)
		b.Kernel = uprobe.KernelMemory{}
		for i := range n {
			nf := h.slotFuncs // a reserved tracer
			if i < len(h.targets) {
				nf = h.targets[i].s.capacity()
			}
			k, err := uprobe.EstimateKernelMemory(nf, b.Sizes)
			if err != nil {
				return err
			}
			b.Kernel.Rings += k.Rings
			b.Kernel.Maps += k.Maps
		}
		if b.Need() <= limit {
			break
		}
		if over > 0 {
			return fmt.Errorf("memory limit %s is too small for %d tracers (%d reserved for programs cgroups start later, %d for targets a reload adds): they need %s; raise --memory-limit or lower the reserve", mib(limit), n, h.slots, h.reloadSlots, mib(b.Need()))
		}
		over = b.Need() - limit
	}
	h.budget = b
	for _, ht := range h.targets {
		ht.s.budget = b
	}
	h.log.Info(b.String(), "targets", len(h.targets), "reserved", h.slots, "reserved_for_reload", h.reloadSlots, "need_bytes", b.Need(), "limit_bytes", limit)
	return nil
}

// splitSizes is a 1/n share of the rings and maps.
func splitSizes(sz uprobe.Sizes, n int) uprobe.Sizes {
	if n <= 1 {
		return sz
	}
	sz.RingOK = pow2Floor(int64(sz.RingOK) / int64(n))
	sz.RingErr = pow2Floor(int64(sz.RingErr) / int64(n))
	sz.Goroutines = max(sz.Goroutines/uint32(n), 1)
	sz.Frames = max(sz.Frames/uint32(n), 1)
	sz.GoroutineSlots = splitSlots(sz.GoroutineSlots, n)
	return sz
}

// splitSlots is the largest power of two at most slots/n (at least 1): the
// slot table's size must be a power of two.
func splitSlots(slots uint32, n int) uint32 {
	want := max(slots/uint32(n), 1)
	s := uint32(1)
	for s<<1 <= want {
		s <<= 1
	}
	return s
}

// run opens the store, attaches every target, and traces until the end.
func (h *host) run(ctx context.Context) (*Result, error) {
	if err := h.planBudget(); err != nil {
		return nil, err
	}
	if h.opts.SetGoMemoryLimit {
		debug.SetMemoryLimit(h.budget.GoLimit())
	}
	// The OTLP sink first: a bad endpoint is refused before the store is
	// created.
	if h.opts.OTLP != nil {
		k, err := openOTLPSink(*h.opts.OTLP, h.budget, h.log)
		if err != nil {
			return nil, err
		}
		h.otlp = k
	}
	h.base = &session{opts: h.opts, log: h.log, budget: h.budget}
	if err := h.base.openStore(); err != nil {
		return nil, err
	}
	h.st = h.base.st
	h.store = h.base.newStoreSink()
	h.sinks, h.counts = fanout{h.store}, []*sessionCounts{h.store.countSessions()}
	if h.otlp != nil {
		h.sinks, h.counts = append(h.sinks, h.otlp), append(h.counts, h.otlp.countSessions())
	}
	for _, ht := range h.targets {
		if err := h.attach(ht); err != nil {
			h.abort(err)
			return nil, fmt.Errorf("%s: %w", ht.t, err)
		}
	}

	for _, k := range h.sinks {
		k.start()
	}
	for _, w := range h.watches {
		h.opts.Control.watch(w.t, h.retarget(w))
	}
	for _, ht := range h.targets {
		ht.p = ht.s.startTracing()
		h.opts.Control.add(ht.t, ht.s)
	}
	h.stopWait = make(chan struct{})
	h.opts.Control.dropper(h.drop)
	if h.opts.Metrics != nil {
		srv := metrics.Serve(h.opts.Metrics, hostMetrics{h}, h.opts.Logger)
		// Closed once every target has ended: their counters stay as
		// they ended (freezeMetrics), and the sinks' drain shows.
		defer srv.Close()
	}
	hctx, stopHelpers := context.WithCancel(context.Background())
	var helpers sync.WaitGroup
	h.shed, h.shedTime = map[string]uint64{}, time.Now().UnixNano()
	for _, f := range []func(context.Context){h.base.retentionLoop, h.shedLoop} {
		helpers.Add(1)
		go func() {
			defer helpers.Done()
			f(hctx)
		}()
	}
	wctx, stopWatches := context.WithCancel(context.Background())
	h.watchCtx = wctx
	for _, w := range h.watches {
		h.startWatch(w)
	}
	// From here a reload may add targets (a cgroup's watch included).
	h.opts.Control.grower(h.grow)
	h.announceReady()

	reason := h.wait(ctx)
	h.mu.Lock()
	h.closing = true // no target is added by a reload from here on
	h.mu.Unlock()
	stopWatches()
	h.watching.Wait() // no target is added from here on
	for _, ht := range h.targets {
		h.end(ht, reason, nil)
	}
	stopHelpers()
	helpers.Wait()
	werr := h.sinks.drain(h.log)
	h.writeShed()
	h.storeTargetAccounts()
	res := h.result(reason)
	if werr != nil {
		return res, fmt.Errorf("store: %w", werr)
	}
	return res, nil
}

// attach begins a target's session row and puts its probes in.
func (h *host) attach(ht *hosted) error {
	s := ht.s
	s.st, s.store, s.sinks = h.st, h.store, h.sinks
	s.pid = ht.tgt.PID()
	s.result = Result{PID: s.pid, ExitCode: -1, Functions: len(s.fnames())}
	if s.follow != nil {
		s.result.Exe = s.follow.path
	}
	if err := s.beginSession(s.pid); err != nil {
		return err
	}
	s.result.Session = s.sess.ID
	s.info = s.metricsInfo()
	if h.otlp != nil {
		h.otlp.register(s.sess)
	}
	if err := s.attach(ht.tgt); err != nil {
		return err
	}
	s.beginProcessRow()
	var err error
	s.conv, err = newConverter(&s.names, s.bin, s.tr, s.pid)
	return err
}

// abort closes the session rows of a host that could not start.
func (h *host) abort(cause error) {
	now := time.Now().UnixNano()
	for _, ht := range h.targets {
		s := ht.s
		if s.sess.ID == 0 {
			continue
		}
		s.sess.End, s.sess.ExitReason = now, "could not start: "+cause.Error()
		if err := h.st.EndSession(s.sess); err != nil {
			h.log.Warn("store the end of a session that could not start", "session", s.sess.ID, "err", err)
		}
		if err := h.st.EndProcesses(s.sess.ID, now, s.sess.ExitReason); err != nil {
			h.log.Warn("store process ends", "session", s.sess.ID, "err", err)
		}
	}
}

// announceReady tells scripts and callers that every probe of every
// target is live; there is no one pid to give, so it gives 0, as AttachExe
// does.
func (h *host) announceReady() {
	if h.opts.ReadyFile != "" {
		if err := writeReady(h.opts.ReadyFile, 0); err != nil {
			h.log.Error("write ready file", "err", err)
		}
	}
	if h.opts.OnReady != nil {
		h.opts.OnReady(0)
	}
}

// wait ends each pid target as it exits, and returns why the host ends:
// every target exited, the duration passed, or ctx is done.
func (h *host) wait(ctx context.Context) string {
	defer close(h.stopWait)
	// The targets now: cgroup watchers and reloads may add targets
	// meanwhile (each watched for its exit as it is added).
	h.mu.Lock()
	targets := slices.Clone(h.targets)
	h.mu.Unlock()
	for _, ht := range targets {
		h.watchExit(ht)
	}
	all := make(chan struct{})
	go func() {
		// Every pid target, those a reload adds included: the host ends
		// once they all have exited and no target was added meanwhile.
		for seen := 0; ; {
			h.mu.Lock()
			if len(h.watches) > 0 {
				h.mu.Unlock()
				return // a cgroup never ends by itself
			}
			more := slices.Clone(h.targets[seen:])
			if len(more) == 0 {
				h.closing = true
				h.mu.Unlock()
				close(all)
				return
			}
			h.mu.Unlock()
			for _, ht := range more {
				if ht.proc == nil {
					return // a file never ends by itself
				}
				select {
				case <-ht.done:
				case <-h.stopWait:
					return
				}
			}
			seen += len(more)
		}
	}()
	timeout, stopTimer := durationTimer(h.opts.Duration)
	defer stopTimer()
	select {
	case <-all:
		return "every target exited"
	case <-timeout:
		return "duration elapsed"
	case <-ctx.Done():
		return stopReason(ctx)
	}
}

// watchExit ends ht once its process exits (a pid target; a file target
// never exits by itself), until the host ends.
func (h *host) watchExit(ht *hosted) {
	go func() {
		select {
		case <-ht.tgt.Exited():
			reason, code, sig := exitReason(ht.tgt)
			h.end(ht, reason, func(r *Result) { r.ExitCode, r.Signaled = code, sig })
		case <-h.stopWait:
		}
	}()
}

// end detaches a target, records the calls it left open, closes its
// session row and frees its tracer, once; the store sink goes on for the
// others.
func (h *host) end(ht *hosted, reason string, exited func(*Result)) {
	ht.once.Do(func() {
		s := ht.s
		s.result.ExitReason = reason
		if exited != nil {
			exited(&s.result)
		}
		h.opts.Control.remove(s)
		s.stopTracing(ht.p)
		s.finish()
		ht.mu.Lock()
		if h.opts.Metrics != nil {
			ht.freezeMetrics(h)
		}
		// Its rings and maps go back now, not when the last target ends.
		s.tr.Close()
		s.tr = nil
		ht.mu.Unlock()
		h.log.Info("target ended", "target", ht.t.String(), "binary", s.sess.Binary, "reason", reason, "session", s.sess.ID)
		close(ht.done)
	})
}

// drop ends the sessions of a target a reload removed (Control.Update),
// each row with the exit reason ExitRemoved, and releases what they hold;
// a cgroup target's watch adds no program any more. The other targets go
// on.
func (h *host) drop(t Target) {
	h.mu.Lock()
	var ended []*hosted
	for _, ht := range h.targets {
		if sameTarget(ht.t, t) {
			ended = append(ended, ht)
		}
	}
	for _, w := range h.watches {
		if sameTarget(w.t, t) {
			w.dropped = true
		}
	}
	// Its files may be traced again by a target a later reload adds.
	h.unclaim(t)
	h.mu.Unlock()
	for _, ht := range ended {
		h.end(ht, ExitRemoved, nil)
		// The lock on a pid target and a cgroup file's descriptor go
		// now (close1 skips what is released here).
		if ht.lock != nil {
			ht.lock.release()
			ht.lock = nil
		}
		if ht.file != nil {
			ht.file.Close()
			ht.file = nil
		}
	}
}

// shedLoop stores what the store sink dropped every StatsInterval.
func (h *host) shedLoop(ctx context.Context) {
	periodically(ctx, h.opts.statsEvery(), h.writeShed)
}

// writeShed stores the records the store sink dropped since the last call
// as aggregates of pid 0 (not attributed to a process), as AttachExe
// stores what its queue shed: the sink's ledger is per function name, not
// per target.
func (h *host) writeShed() {
	now := time.Now().UnixNano()
	dropped := h.store.Ledger().Dropped
	var rows []record.FuncStats
	for f, n := range dropped {
		if d := n - h.shed[f]; d > 0 {
			rows = append(rows, record.FuncStats{Function: f, Dropped: d, IntervalStart: h.shedTime, IntervalEnd: now})
		}
	}
	if len(rows) > 0 {
		if err := h.st.WriteStats(rows); err != nil {
			h.log.Warn("write the store sink's losses", "err", err)
			return
		}
	}
	h.shed, h.shedTime = dropped, now
}

// result sums the targets' results, with the store sink's account.
func (h *host) result(reason string) *Result {
	r := &Result{ExitCode: -1, ExitReason: reason}
	for _, ht := range h.targets {
		tr := ht.s.result
		r.Targets = append(r.Targets, tr)
		r.Calls += tr.Calls
		r.Sampled += tr.Sampled
		r.Dropped += tr.Dropped
		r.Sites += tr.Sites
		r.Functions += tr.Functions
		r.Gaps += tr.Gaps
		r.AttachTime += tr.AttachTime
		r.DetachTime += tr.DetachTime
		if tr.Exe != "" {
			r.Processes += tr.Processes
		} else {
			r.Processes++
		}
	}
	l := h.store.Ledger()
	written, dropped, _ := l.Totals()
	r.Recorded = written
	r.Dropped += dropped
	r.ErrorsLost = l.ErrorsLost
	for _, k := range h.sinks {
		r.Sinks = append(r.Sinks, k.Ledger())
	}
	logErrorsLost(h.log, r.ErrorsLost)
	return r
}

// close releases what the targets hold, then the store.
func (h *host) close() {
	for _, ht := range slices.Backward(h.targets) {
		h.close1(ht)
	}
	if h.st != nil {
		h.st.Close()
	}
	if h.otlp != nil && !h.otlp.started {
		h.otlp.w.exp.Close() // a started sink's Wait closes it
	}
}

// close1 releases what one target holds.
func (h *host) close1(ht *hosted) {
	if ht.s != nil {
		if ht.s.tr != nil {
			ht.s.tr.Close()
		}
		ht.s.bin.Close()
	}
	if ht.lock != nil {
		ht.lock.release()
	}
	if ht.proc != nil {
		ht.proc.Close()
	}
	if ht.file != nil {
		ht.file.Close()
	}
}
