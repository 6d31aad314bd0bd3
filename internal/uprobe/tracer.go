// Package uprobe owns the kernel side of tracing: it loads obs-agent's BPF
// programs (bpf/obs.c), attaches them to the entry and RET sites of the
// selected Go functions of one process, or of every process of one file,
// and hands back what they produce:
// call events from two ring buffers (an ok lane and an error lane), exact
// per-function aggregates, health counters, and the frames still open when
// the process ends. It knows nothing about symbols or storage: callers give
// it file offsets and get events keyed by function index.
//
// Sites are attached with one uprobe_multi link per program where the
// kernel supports it (Linux 6.6+), which attaches and detaches thousands of
// sites in one system call each; otherwise one perf-event uprobe per site.
// Every probe is filtered by the traced pid, or, with Config.PID 0, by
// none: uprobes belong to the file's inode, so the kernel then arms every
// process that maps the file, those that exec it later included, before
// their first instruction, and processes of other files are never hit.
package uprobe

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/kernel"
)

// Sentinel errors that callers branch on.
var (
	// ErrPermission means the caller lacks the privileges to load BPF
	// programs or attach uprobes.
	ErrPermission = errors.New("permission denied: tracing needs root, or CAP_BPF + CAP_PERFMON (+ CAP_SYS_PTRACE to trace another user's process)")
	// ErrProcessGone means the target process exited before or during attach.
	ErrProcessGone = errors.New("target process exited")
	// ErrDetached means the probes were removed for good: the session is
	// ending, and Reattach has nothing to replace.
	ErrDetached = errors.New("probes already detached")
)

// ErrorLoc says where a function's error result is at its RET sites.
type ErrorLoc struct {
	Mode     ErrMode
	ItabReg  uint8 // ABI integer register index (ErrInRegs)
	DataReg  uint8
	StackOff int32 // from SP at RET to the itab word (ErrOnStack)
}

// ErrMode says where an error result is; the values are bpf/obs.h's enum
// obs_err_mode.
type ErrMode uint8

const (
	ErrNone    = ErrMode(obsObsErrModeOBS_ERR_NONE)  // no error result, or unknown
	ErrInRegs  = ErrMode(obsObsErrModeOBS_ERR_REGS)  // in two integer result registers
	ErrOnStack = ErrMode(obsObsErrModeOBS_ERR_STACK) // in a stack slot above SP
)

// Func is one function to trace. Its index in Config.Funcs is its id in
// every event.
type Func struct {
	Entry uint64 // file offset of the first instruction
	// Rets are the file offsets of every RET instruction. A function with
	// none (it only panics, ends in os.Exit, or loops forever) is traced
	// by its entry alone: its call is closed by the panic that leaves it,
	// by runtime.Goexit, or at the end of the trace.
	Rets       []uint64
	Err        ErrorLoc
	SampleRate float64 // fraction of ok calls to keep; errors are always kept
	// EntryAddr is the static (link-time) address of the first
	// instruction, from which a PIEFile tracer finds each process's load
	// bias.
	EntryAddr uint64
}

// Runtime holds the file offsets of the runtime functions the tracer hooks.
// A zero offset leaves that hook out.
type Runtime struct {
	Newproc1     uint64   // runtime.newproc1 entry
	Newproc1Rets []uint64 // its RET sites
	NewprocGPReg uint32   // ABI integer register holding newproc1's callergp
	Gopanic      uint64
	Goexit1      uint64
	Copystack    uint64 // runtime.copystack entry
}

// Config describes one attachment.
type Config struct {
	Binary string // path of the executable whose inode is probed
	// PID is the traced process; 0 traces every process of Binary (the
	// BPF state is keyed by tgid, and the goroutine slot table, keyed by
	// g alone, is off).
	PID int
	// Cgroup, when not 0, is the id of a cgroup v2 (the inode number of
	// its directory) at depth CgroupLevel below the root: only processes
	// in it or its descendants are traced, the others' hits end at the
	// programs' first check. For a file target (PID 0).
	Cgroup      uint64
	CgroupLevel uint32
	// PIEFile traces a position-independent file in every process that
	// maps it (PID 0), each at its own load bias: ErrText is then keyed
	// by static address, and Bias gives each process's bias.
	PIEFile    bool
	GoidOffset uint64
	Funcs      []Func
	Runtime    Runtime
	IDBase     uint64 // first call id handed out
	// ErrText holds the read plans of error types, keyed by the run-time
	// address of their type descriptor (bpf/errtext.h).
	ErrText map[uint64]ErrTextNode
	// Empty attaches empty programs to the same sites: the overhead floor.
	Empty bool
	// Single forces one perf-event uprobe per site instead of uprobe_multi.
	Single bool
	// NoKernelPIDFilter attaches uprobe_multi links without the kernel's
	// pid filter, as on kernels before 6.10, leaving the filtering to the
	// BPF programs (for tests of that path).
	NoKernelPIDFilter bool
	// Sizes sets the ring buffers and the goroutine, slot and frame maps
	// (see EstimateKernelMemory); zero fields keep DefaultSizes.
	Sizes Sizes
	// Capacity is how many functions the per-function maps hold, so that
	// Update can add functions to a running tracer; 0 (or less than
	// len(Funcs)) means len(Funcs): no room to grow.
	Capacity int
}

// capacity is the size of the per-function maps.
func (c *Config) capacity() int { return max(c.Capacity, len(c.Funcs), 1) }

// drainTime is how long detach lets calls that were open when the entries
// were disarmed reach their RET before the RETs are disarmed too; what is
// still open after it is reported as unfinished, which it is.
const drainTime = 20 * time.Millisecond

// Tracer is a loaded and attached set of probes.
type Tracer struct {
	// mu orders the changes of the attached sites against each other:
	// Reattach (the circuit breaker's goroutine), Update (a reload),
	// Retire (the session's retire loop) and Detach (the session's end):
	// once detached, nothing is attached again. What other goroutines
	// read without it is immutable after Attach (capacity) or atomic
	// (nfuncs, sites).
	mu       sync.Mutex
	detached bool
	objs     obsObjects
	// cfg.Funcs is the function table: append-only (Update), so an id
	// never changes meaning; nfuncs is its length for readers that do
	// not hold mu (Stats).
	cfg    Config
	nfuncs atomic.Int64
	// capacity is how many functions the per-function maps hold, fixed
	// when they are made.
	capacity int
	// state is each function's part in the selection, paused the circuit
	// breaker's pauses (Reattach): both say which sites a generation has.
	state        []funcState
	paused       map[int]Removed
	ex           *link.Executable
	entryLinks   []link.Link // entry and leaf sites of the active generation
	retLinks     []link.Link // RET sites of the active generation
	runtimeLinks []link.Link // runtime hooks
	gen          uint32
	runtimeSites int
	okRing       *ring
	errRing      *ring
	// sites is how many probe sites are attached now: written under mu
	// by every switch, read by anyone (Sites).
	sites    atomic.Int64
	multi    bool
	monoWall int64 // wall - monotonic, ns
}

// Sites returns how many probe sites are attached.
func (t *Tracer) Sites() int { return int(t.sites.Load()) }

// Multi reports whether uprobe_multi links are used.
func (t *Tracer) Multi() bool { return t.multi }

// HaveUprobeMulti reports whether the kernel supports uprobe_multi links.
func HaveUprobeMulti() error { return features.HaveBPFLinkUprobeMulti() }

// Attach loads the programs and attaches them. On error nothing stays
// attached or loaded.
func Attach(cfg Config) (_ *Tracer, err error) {
	if len(cfg.Funcs) == 0 {
		return nil, errors.New("attach: no functions to trace")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("attach: remove memlock limit: %w", permErr(err))
	}
	multi := !cfg.Single && HaveUprobeMulti() == nil
	if !multi {
		if err := ensureFDs(singleSites(cfg)); err != nil {
			return nil, fmt.Errorf("attach: %w", err)
		}
	}

	spec, err := loadObs()
	if err != nil {
		return nil, fmt.Errorf("attach: load BPF spec: %w", err)
	}
	if !multi {
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachNone
		}
	}
	t := &Tracer{cfg: cfg, multi: multi, capacity: cfg.capacity()}
	want := cfg.Sizes
	if !t.slotsOn() {
		want.GoroutineSlots = 1
	}
	sz, err := want.apply(spec, t.capacity)
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	n := uint32(len(cfg.Funcs))
	mask := sz.GoroutineSlots - 1
	idBase := cfg.IDBase
	if idBase == 0 {
		idBase = 1
	}
	okWake, errWake := wakeEvery(sz)
	for _, v := range []struct {
		name string
		val  any
	}{
		{obsVarGoidOffset, cfg.GoidOffset},
		{obsVarNewprocCallergpReg, cfg.Runtime.NewprocGPReg},
		{obsVarTargetTgid, uint32(cfg.PID)},
		{obsVarTargetCgroup, cfg.Cgroup},
		{obsVarPieFile, boolU32(cfg.PIEFile)},
		{obsVarTargetCgroupLevel, cfg.CgroupLevel},
		{obsVarCheckTgid, boolU32(!t.kernelFiltersPID())},
		{obsVarOkWakeRecords, okWake},
		{obsVarErrWakeRecords, errWake},
		{obsVarNextId, idBase},
		{obsVarPhase, uint32(obsObsPhaseOBS_PHASE_ARMING)},
		{obsVarGslotMask, mask},
	} {
		if err := spec.Variables[v.name].Set(v.val); err != nil {
			return nil, fmt.Errorf("attach: set %s: %w", v.name, err)
		}
	}

	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("attach: BPF verifier rejected the programs: %+v", ve)
		}
		return nil, fmt.Errorf("attach: load BPF programs: %w", permErr(err))
	}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()

	if err := t.writeFuncInfo(cfg.Funcs, 0); err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	t.state = make([]funcState, n)
	t.nfuncs.Store(int64(n))
	if err := t.loadErrText(cfg.ErrText); err != nil {
		return nil, err
	}

	if t.okRing, err = newRing(t.objs.RingOk); err != nil {
		return nil, fmt.Errorf("attach: open ok ring: %w", err)
	}
	if t.errRing, err = newRing(t.objs.RingErr); err != nil {
		return nil, fmt.Errorf("attach: open error ring: %w", err)
	}

	ex, err := link.OpenExecutable(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("attach: open %s: %w", cfg.Binary, err)
	}
	t.ex = ex
	t.monoWall = monoToWall()
	// Arm from the inside out, so that no call is seen entering without
	// every probe that closes it in place: the runtime hooks, then the RET
	// sites; only then do entries open frames (phase live), and the entry
	// sites go in last. A RET that fires meanwhile finds no frame and is
	// counted as unmatched, never recorded.
	if !cfg.Empty {
		for _, g := range runtimeGroups(&t.objs, cfg.Runtime) {
			ls, err := t.attachGroup(g.prog, g.sites)
			t.runtimeLinks = append(t.runtimeLinks, ls...)
			if err != nil {
				return nil, err
			}
			t.runtimeSites += len(g.sites)
		}
	}
	sites := t.sitesOf(0)
	var nrets int
	if t.retLinks, nrets, err = t.attachRets(sites); err != nil {
		return nil, err
	}
	if err := t.setPhase(obsObsPhaseOBS_PHASE_LIVE); err != nil {
		return nil, err
	}
	var nentries int
	if t.entryLinks, nentries, err = t.attachEntries(sites); err != nil {
		return nil, err
	}
	t.sites.Store(int64(nrets + nentries + t.runtimeSites))
	return t, nil
}

// slotsOn reports whether the goroutine slot table may be used: it is
// keyed by g alone, so it serves one process at a time.
func (t *Tracer) slotsOn() bool { return t.cfg.PID != 0 }

// wakeEvery is how many records a CPU writes to each ring before it wakes
// the reader: a sixteenth of the ok ring, and a hundred-and-twenty-eighth
// of the error ring, whose records matter most and are rarer.
func wakeEvery(sz Sizes) (ok, errs uint32) {
	const header = 8 // the ring's per-record header
	ok = sz.RingOK / 16 / uint32(callEventSize+header)
	errs = sz.RingErr / 128 / uint32(errEventSize+header)
	return max(ok, 1), max(errs, 1)
}

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// kernelFiltersPID reports whether the links filter by the target pid in
// the kernel, so that every hit the programs see is the target's.
func (t *Tracer) kernelFiltersPID() bool {
	if t.cfg.PID == 0 {
		return false
	}
	// Perf-event uprobes (the fallback) filter by the target too, but the
	// programs keep checking there: it is the path for old kernels, where
	// a helper call matters least.
	return t.multi && !t.cfg.NoKernelPIDFilter && kernel.MultiPIDFilterWorks()
}

func (t *Tracer) setPhase(p obsObsPhase) error {
	if err := t.objs.Phase.Set(uint32(p)); err != nil {
		return fmt.Errorf("set session phase: %w", err)
	}
	return nil
}

// Removed says which sites of a function are left out of an attachment.
type Removed struct {
	Entry bool // no new calls are seen
	Rets  bool // calls already open are not closed either
}

// siteSet is one generation's function sites, by the program that runs
// them.
type siteSet struct {
	entries, rets, leaves []site
}

// sitesOf lists the function sites of generation gen: those of every
// function but what its state and the breaker's pauses leave out.
// Cookies carry gen << 32 | function id.
func (t *Tracer) sitesOf(gen uint32) siteSet {
	var s siteSet
	for i, f := range t.cfg.Funcs {
		rm := t.paused[i]
		switch t.state[i] {
		case funcRetiring:
			rm.Entry = true
		case funcOff:
			rm = Removed{Entry: true, Rets: true}
		}
		cookie := uint64(gen)<<32 | uint64(i)
		leaf := false
		for _, r := range f.Rets {
			if r == f.Entry {
				// The first instruction is a RET: one probe does both.
				leaf = true
				continue
			}
			if !rm.Rets {
				s.rets = append(s.rets, site{r, cookie})
			}
		}
		switch {
		case rm.Entry:
		case leaf:
			s.leaves = append(s.leaves, site{f.Entry, cookie})
		default:
			s.entries = append(s.entries, site{f.Entry, cookie})
		}
	}
	return s
}

func (t *Tracer) progs() (entry, ret, leaf *ebpf.Program) {
	if t.cfg.Empty {
		return t.objs.ObsEmpty, t.objs.ObsEmpty, t.objs.ObsEmpty
	}
	return t.objs.ObsEntry, t.objs.ObsRet, t.objs.ObsLeaf
}

// attachRets attaches the RET sites of s.
func (t *Tracer) attachRets(s siteSet) ([]link.Link, int, error) {
	_, ret, _ := t.progs()
	ls, err := t.attachGroup(ret, s.rets)
	if err != nil {
		closeLinks(ls)
		return nil, 0, err
	}
	return ls, len(s.rets), nil
}

// attachEntries attaches the entry and leaf sites of s (a leaf site opens
// and closes its call in one probe).
func (t *Tracer) attachEntries(s siteSet) ([]link.Link, int, error) {
	entry, _, leaf := t.progs()
	var all []link.Link
	for _, g := range []group{{leaf, s.leaves}, {entry, s.entries}} {
		ls, err := t.attachGroup(g.prog, g.sites)
		all = append(all, ls...)
		if err != nil {
			closeLinks(all)
			return nil, 0, err
		}
	}
	return all, len(s.leaves) + len(s.entries), nil
}

// Reattach replaces the function sites with a set that leaves out what
// removed says (nil: every site), as the circuit breaker pauses and
// resumes functions (see switchSites). It returns how long the whole
// switch took.
func (t *Tracer) Reattach(removed map[int]Removed) (time.Duration, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.detached {
		return 0, ErrDetached
	}
	t.paused = removed
	return t.switchSites()
}

// switchSites replaces the function sites with those sitesOf gives now,
// with no instant when a site present before and after has no live probe,
// and no trap handled twice: the new generation is attached beside the
// old, both are accepted, the old one is detached (closing a link waits
// for the handlers running on it), and then the new one alone is
// accepted. A trap on a site of both generations meanwhile runs both
// programs, and bpf/helpers.h site_func handles it once. t.mu is held.
func (t *Tracer) switchSites() (time.Duration, error) {
	start := time.Now()
	gen := t.gen + 1
	sites := t.sitesOf(gen)
	rets, nrets, err := t.attachRets(sites)
	if err != nil {
		return time.Since(start), err
	}
	entries, nentries, err := t.attachEntries(sites)
	if err != nil {
		closeLinks(rets)
		return time.Since(start), err
	}
	if err := t.objs.Gens.Set(uint64(gen) | uint64(t.gen)<<32); err != nil {
		closeLinks(entries)
		closeLinks(rets)
		return time.Since(start), fmt.Errorf("switch probe generation: %w", err)
	}
	oldEntries, oldRets := t.entryLinks, t.retLinks
	t.entryLinks, t.retLinks, t.gen = entries, rets, gen
	t.sites.Store(int64(nrets + nentries + t.runtimeSites))
	closeLinks(oldEntries)
	closeLinks(oldRets)
	if err := t.objs.Gens.Set(uint64(gen) | uint64(gen)<<32); err != nil {
		return time.Since(start), fmt.Errorf("switch probe generation: %w", err)
	}
	return time.Since(start), nil
}

func closeLinks(ls []link.Link) {
	for _, l := range ls {
		l.Close()
	}
}

// group is a set of sites that run one program.
type group struct {
	prog  *ebpf.Program
	sites []site
}

func runtimeGroups(objs *obsObjects, rt Runtime) []group {
	var gs []group
	if rt.Newproc1 != 0 && len(rt.Newproc1Rets) > 0 {
		rets := make([]site, len(rt.Newproc1Rets))
		for i, r := range rt.Newproc1Rets {
			rets[i] = site{off: r}
		}
		gs = append(gs, group{objs.ObsNewprocEntry, []site{{off: rt.Newproc1}}}, group{objs.ObsNewprocRet, rets})
	}
	// gopanic and goexit1 close frames: like the RETs, they are armed
	// before any entry.
	if rt.Gopanic != 0 {
		gs = append(gs, group{objs.ObsGopanic, []site{{off: rt.Gopanic}}})
	}
	if rt.Goexit1 != 0 {
		gs = append(gs, group{objs.ObsGoexit, []site{{off: rt.Goexit1}}})
	}
	if rt.Copystack != 0 {
		gs = append(gs, group{objs.ObsCopystack, []site{{off: rt.Copystack}}})
	}
	return gs
}

type site struct {
	off    uint64
	cookie uint64
}

// attachGroup attaches prog to sites, filtered by the target pid.
func (t *Tracer) attachGroup(prog *ebpf.Program, sites []site) ([]link.Link, error) {
	if len(sites) == 0 {
		return nil, nil
	}
	pid := t.cfg.PID
	if t.multi {
		if t.cfg.NoKernelPIDFilter || !kernel.MultiPIDFilterWorks() {
			// Probe every process of the binary; the programs keep only
			// the target (target_tgid). Other processes of the same
			// binary pay the trap cost meanwhile.
			pid = 0
		}
		offs := make([]uint64, len(sites))
		cookies := make([]uint64, len(sites))
		for i, s := range sites {
			offs[i], cookies[i] = s.off, s.cookie
		}
		l, err := t.ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: offs, Cookies: cookies, PID: uint32(pid)})
		if err != nil {
			return nil, attachErr(err, t.cfg.PID)
		}
		return []link.Link{l}, nil
	}
	var ls []link.Link
	for _, s := range sites {
		l, err := t.ex.Uprobe("", prog, &link.UprobeOptions{Address: s.off, PID: pid, Cookie: s.cookie})
		if err != nil {
			return ls, attachErr(err, pid)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func attachErr(err error, pid int) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("attach uprobes to pid %d: %w", pid, ErrProcessGone)
	}
	return fmt.Errorf("attach uprobes: %w", permErr(err))
}

func permErr(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w (%v)", ErrPermission, err)
	}
	return err
}

func funcInfo(f Func) obsFuncInfo {
	fi := obsFuncInfo{
		ErrMode:  uint8(f.Err.Mode),
		ItabReg:  f.Err.ItabReg,
		DataReg:  f.Err.DataReg,
		StackOff: f.Err.StackOff,
		Entry:    f.EntryAddr,
	}
	switch {
	case f.SampleRate >= 1:
		fi.SampleAll = 1
	case f.SampleRate <= 0:
		fi.SampleThresh = 0
	default:
		fi.SampleThresh = uint32(f.SampleRate * float64(1<<32))
	}
	return fi
}

// writeFuncInfo writes the function table entries of funcs, whose first
// id is first.
func (t *Tracer) writeFuncInfo(funcs []Func, first int) error {
	if len(funcs) == 0 {
		return nil
	}
	infos := make([]obsFuncInfo, len(funcs))
	keys := make([]uint32, len(funcs))
	for i, f := range funcs {
		keys[i] = uint32(first + i)
		infos[i] = funcInfo(f)
	}
	if _, err := t.objs.Funcs.BatchUpdate(keys, infos, nil); err != nil {
		return fmt.Errorf("fill function table: %w", err)
	}
	return nil
}

// Detach removes every probe but keeps the maps and rings readable, so the
// caller can drain what is left. It returns how long the detach took.
//
// It disarms from the outside in, the reverse of Attach: first the entries
// stop opening frames (phase draining, at once for every site), then the
// entry sites go, calls still open get drainTime to return, and only then
// do the RET sites and the runtime hooks go. A RET of a call that began
// after the entries stopped is counted as such (DrainRet), never recorded;
// a call still open at the end really was.
//
// Closing a uprobe waits for an RCU tasks-trace grace period. A
// uprobe_multi link pays it once for all its sites; single uprobes pay it
// each, about 100 ms per site here, and closing them from several
// goroutines did not overlap the waits (measured), so they are closed in
// order.
func (t *Tracer) Detach() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.detached = true
	start := time.Now()
	if t.entryLinks == nil && t.retLinks == nil && t.runtimeLinks == nil {
		return 0
	}
	// The map may already be closed when attach failed half way; closing
	// the links is what matters then.
	_ = t.setPhase(obsObsPhaseOBS_PHASE_DRAINING)
	closeLinks(t.entryLinks)
	if len(t.retLinks) > 0 {
		time.Sleep(drainTime)
	}
	closeLinks(t.retLinks)
	closeLinks(t.runtimeLinks)
	t.entryLinks, t.retLinks, t.runtimeLinks = nil, nil, nil
	return time.Since(start)
}

// Close detaches and frees everything.
func (t *Tracer) Close() error {
	t.Detach()
	if t.okRing != nil {
		t.okRing.close()
	}
	if t.errRing != nil {
		t.errRing.close()
	}
	return t.objs.Close()
}

// monoToWall returns CLOCK_REALTIME - CLOCK_MONOTONIC in nanoseconds, the
// offset that turns bpf_ktime_get_ns() into wall-clock time.
func monoToWall() int64 {
	var mono, wall unix.Timespec
	best := int64(-1)
	var off int64
	// Take the tightest of a few bracketed readings.
	for i := 0; i < 5; i++ {
		var m1, m2 unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m1)
		_ = unix.ClockGettime(unix.CLOCK_REALTIME, &wall)
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m2)
		span := m2.Nano() - m1.Nano()
		if best < 0 || span < best {
			best = span
			mono = m1
			off = wall.Nano() - (mono.Nano() + span/2)
		}
	}
	return off
}

// WallNs converts a BPF monotonic timestamp to Unix nanoseconds.
func (t *Tracer) WallNs(mono uint64) int64 { return int64(mono) + t.monoWall }

// MonoNow is the current CLOCK_MONOTONIC time, as BPF sees it.
func MonoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
