// Package uprobe owns the kernel side of tracing: it loads obs-agent's BPF
// programs (bpf/obs.c), attaches them to the entry and RET sites of the
// selected Go functions of one process, and hands back what they produce:
// call events from two ring buffers (an ok lane and an error lane), exact
// per-function aggregates, health counters, and the frames still open when
// the process ends. It knows nothing about symbols or storage: callers give
// it file offsets and get events keyed by function index.
//
// Sites are attached with one uprobe_multi link per program where the
// kernel supports it (Linux 6.6+), which attaches and detaches thousands of
// sites in one system call each; otherwise one perf-event uprobe per site.
// Every probe is filtered by the traced pid.
package uprobe

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Sentinel errors that callers branch on.
var (
	// ErrPermission means the caller lacks the privileges to load BPF
	// programs or attach uprobes.
	ErrPermission = errors.New("permission denied: tracing needs root, or CAP_BPF + CAP_PERFMON (+ CAP_SYS_PTRACE to trace another user's process)")
	// ErrProcessGone means the target process exited before or during attach.
	ErrProcessGone = errors.New("target process exited")
)

// ErrorLoc says where a function's error result is at its RET sites.
type ErrorLoc struct {
	Mode     uint8 // 0: none, 1: registers, 2: stack
	ItabReg  uint8 // ABI integer register index (mode 1)
	DataReg  uint8
	StackOff int32 // from SP at RET to the itab word (mode 2)
}

// Func is one function to trace. Its index in Config.Funcs is its id in
// every event.
type Func struct {
	Entry      uint64   // file offset of the first instruction
	Rets       []uint64 // file offsets of every RET instruction
	Err        ErrorLoc
	SampleRate float64 // fraction of ok calls to keep; errors are always kept
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
	Binary     string // path of the executable whose inode is probed
	PID        int
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
}

// Tracer is a loaded and attached set of probes.
type Tracer struct {
	objs         obsObjects
	cfg          Config
	ex           *link.Executable
	siteLinks    []link.Link // function sites of the active generation
	runtimeLinks []link.Link // runtime hooks
	gen          uint32
	runtimeSites int
	okRing       *ringbuf.Reader
	errRing      *ringbuf.Reader
	sites        int
	multi        bool
	monoWall     int64 // wall - monotonic, ns
}

// Sites returns how many probe sites are attached.
func (t *Tracer) Sites() int { return t.sites }

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

	spec, err := loadObs()
	if err != nil {
		return nil, fmt.Errorf("attach: load BPF spec: %w", err)
	}
	if !multi {
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachNone
		}
	}
	n := uint32(len(cfg.Funcs))
	spec.Maps["funcs"].MaxEntries = n
	spec.Maps["fstats"].MaxEntries = n
	if err := spec.Variables["goid_offset"].Set(cfg.GoidOffset); err != nil {
		return nil, fmt.Errorf("attach: set goid offset: %w", err)
	}
	if err := spec.Variables["newproc_callergp_reg"].Set(cfg.Runtime.NewprocGPReg); err != nil {
		return nil, fmt.Errorf("attach: set newproc register: %w", err)
	}
	if err := spec.Variables["target_tgid"].Set(uint32(cfg.PID)); err != nil {
		return nil, fmt.Errorf("attach: set target pid: %w", err)
	}
	idBase := cfg.IDBase
	if idBase == 0 {
		idBase = 1
	}
	if err := spec.Variables["next_id"].Set(idBase); err != nil {
		return nil, fmt.Errorf("attach: set id base: %w", err)
	}

	t := &Tracer{cfg: cfg, multi: multi}
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

	infos := make([]obsFuncInfo, n)
	keys := make([]uint32, n)
	for i, f := range cfg.Funcs {
		keys[i] = uint32(i)
		infos[i] = funcInfo(f)
	}
	if _, err := t.objs.Funcs.BatchUpdate(keys, infos, nil); err != nil {
		return nil, fmt.Errorf("attach: fill function table: %w", err)
	}
	if err := t.loadErrText(cfg.ErrText); err != nil {
		return nil, err
	}

	if t.okRing, err = ringbuf.NewReader(t.objs.RingOk); err != nil {
		return nil, fmt.Errorf("attach: open ok ring: %w", err)
	}
	if t.errRing, err = ringbuf.NewReader(t.objs.RingErr); err != nil {
		return nil, fmt.Errorf("attach: open error ring: %w", err)
	}

	ex, err := link.OpenExecutable(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("attach: open %s: %w", cfg.Binary, err)
	}
	t.ex = ex
	var nsites int
	if t.siteLinks, nsites, err = t.attachSites(0, nil); err != nil {
		return nil, err
	}
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
	t.sites = nsites + t.runtimeSites
	t.monoWall = monoToWall()
	return t, nil
}

// Removed says which sites of a function are left out of an attachment.
type Removed struct {
	Entry bool // no new calls are seen
	Rets  bool // calls already open are not closed either
}

// attachSites attaches the function sites of generation gen, leaving out
// what removed says. Cookies carry gen << 32 | function id.
func (t *Tracer) attachSites(gen uint32, removed map[int]Removed) ([]link.Link, int, error) {
	entryProg, retProg, leafProg := t.objs.ObsEntry, t.objs.ObsRet, t.objs.ObsLeaf
	if t.cfg.Empty {
		entryProg, retProg, leafProg = t.objs.ObsEmpty, t.objs.ObsEmpty, t.objs.ObsEmpty
	}
	var entries, rets, leaves []site
	for i, f := range t.cfg.Funcs {
		rm := removed[i]
		cookie := uint64(gen)<<32 | uint64(i)
		leaf := false
		for _, r := range f.Rets {
			if r == f.Entry {
				// The first instruction is a RET: one probe does both.
				leaf = true
				continue
			}
			if !rm.Rets {
				rets = append(rets, site{r, cookie})
			}
		}
		switch {
		case rm.Entry:
		case leaf:
			leaves = append(leaves, site{f.Entry, cookie})
		default:
			entries = append(entries, site{f.Entry, cookie})
		}
	}
	var all []link.Link
	for _, g := range []group{{entryProg, entries}, {retProg, rets}, {leafProg, leaves}} {
		ls, err := t.attachGroup(g.prog, g.sites)
		all = append(all, ls...)
		if err != nil {
			closeLinks(all)
			return nil, 0, err
		}
	}
	return all, len(entries) + len(rets) + len(leaves), nil
}

// Reattach replaces the function sites with a set that leaves out what
// removed says (nil: every site), as used to pause and resume functions.
// The new set is attached beside the old one under a new generation, the
// programs switch to it at once, and then the old set is detached, so no
// trap is handled twice and none is missed outside the instant of the
// switch. It returns how long the whole switch took.
func (t *Tracer) Reattach(removed map[int]Removed) (time.Duration, error) {
	start := time.Now()
	gen := t.gen + 1
	ls, n, err := t.attachSites(gen, removed)
	if err != nil {
		return time.Since(start), err
	}
	if err := t.objs.ActiveGen.Set(gen); err != nil {
		closeLinks(ls)
		return time.Since(start), fmt.Errorf("switch probe generation: %w", err)
	}
	old := t.siteLinks
	t.siteLinks, t.gen, t.sites = ls, gen, n+t.runtimeSites
	closeLinks(old)
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

// multiPIDFilterWorks reports whether the kernel's uprobe_multi pid filter
// admits every thread of the process: before Linux 6.10 (commit
// 46ba0e49b642) it admitted only the thread whose id equals the pid, so
// calls on the Go program's other threads would be missed.
func multiPIDFilterWorks() bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major > 6 || (major == 6 && minor >= 10)
}

// attachGroup attaches prog to sites, filtered by the target pid.
func (t *Tracer) attachGroup(prog *ebpf.Program, sites []site) ([]link.Link, error) {
	if len(sites) == 0 {
		return nil, nil
	}
	pid := t.cfg.PID
	if t.multi {
		if t.cfg.NoKernelPIDFilter || !multiPIDFilterWorks() {
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
		ErrMode:  f.Err.Mode,
		ItabReg:  f.Err.ItabReg,
		DataReg:  f.Err.DataReg,
		StackOff: f.Err.StackOff,
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

// Detach removes every probe but keeps the maps and rings readable, so the
// caller can drain what is left. It returns how long the detach took.
//
// Closing a uprobe waits for an RCU tasks-trace grace period. A
// uprobe_multi link pays it once for all its sites; single uprobes pay it
// each, about 100 ms per site here, and closing them from several
// goroutines did not overlap the waits (measured), so they are closed in
// order.
func (t *Tracer) Detach() time.Duration {
	start := time.Now()
	closeLinks(t.siteLinks)
	closeLinks(t.runtimeLinks)
	t.siteLinks, t.runtimeLinks = nil, nil
	return time.Since(start)
}

// Close detaches and frees everything.
func (t *Tracer) Close() error {
	t.Detach()
	if t.okRing != nil {
		t.okRing.Close()
	}
	if t.errRing != nil {
		t.errRing.Close()
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
