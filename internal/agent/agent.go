// Package agent owns one tracing session end to end: it reads the target's
// binary, selects functions, attaches the probes (to one process, or to
// every process of one executable file, which a follower keeps track of:
// exe.go, exefollow.go; several targets in one agent: host.go), runs the
// pipeline tracer (kernel rings) → decoder → sinks, in which every record
// goes to every sink (the store, and OTLP
// with --otlp-endpoint), each with its own bounded error-first queue and
// its own ledger of what it wrote and lost (sink.go, otlpsink.go), and,
// when the target exits or the session ends, detaches, closes what was
// left open and writes the final aggregates. It refuses to trace
// obs-agent itself, and holds a lock on its target so that a second agent
// refuses the same process (guard.go). It sizes the session's memory from
// one limit (memory.go) and closes the session rows of agents that were
// killed (owner.go). The attach and run commands are thin wrappers around
// it.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/obs-agent/obs-agent/internal/errtext"
	"github.com/obs-agent/obs-agent/internal/metrics"
	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/resources"
	"github.com/obs-agent/obs-agent/internal/retention"
	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/selector"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// Options configure a session.
type Options struct {
	Include    []string // -f patterns
	Exclude    []string // -x patterns
	MaxProbes  int      // 0: selector default
	SampleRate float64  // share of ok calls kept; errors are always kept
	DB         string   // store path
	Duration   time.Duration
	ReadyFile  string // written once every probe is live
	// OnReady, when set, is called once every probe is live (before a
	// program started by Run is let go).
	OnReady func(pid int)
	// StatsInterval is how often aggregates are written; 0 means 1 min. It is
	// the time resolution of query stats, and sets how many rows a long
	// range reads in the open hour (closed hours are rolled up; see
	// BenchmarkQueries in internal/query).
	StatsInterval time.Duration
	// QueueBytes bounds the memory held by ok records waiting for the
	// store; 0 means the ok lane's share of MemoryLimit.
	QueueBytes int64
	// MemoryLimit is the memory the agent may use, kernel memory
	// included; it sizes the rings, the goroutine and frame maps, both
	// queue lanes and SQLite's cache (see Budget). 0 means
	// DefaultMemoryLimit.
	MemoryLimit int64
	// SetGoMemoryLimit applies the budget's Go part to the Go runtime
	// (runtime/debug.SetMemoryLimit). It is process-wide, so only the
	// command sets it, not tests that run sessions in their own process.
	SetGoMemoryLimit bool
	// SpillDir is the spill journal's directory; "" means <DB>.spill. On
	// another file system than the store, error records survive the
	// store's disk filling up.
	SpillDir string
	// SingleProbes forces one perf-event uprobe per site.
	SingleProbes bool
	// Retention is how long records are kept (default 6h); a pass runs
	// every minute while tracing. ArchiveDir, when set, receives each hour
	// before it is dropped.
	Retention  time.Duration
	ArchiveDir string
	// SampleInterval is how often the target's resource use is sampled;
	// 0 means 5 s, negative disables sampling.
	SampleInterval time.Duration
	// MaxOverhead is the circuit breaker's budget: the fraction of one CPU
	// the probe traps may cost the target before the hottest functions'
	// probes are paused (see breaker). 0 disables the breaker.
	MaxOverhead float64
	// Status, when set, shows a live status line (on a terminal).
	Status *StatusLine
	// Signals, for Run, are the signals obs-agent received that are
	// forwarded to the program (run passes SIGINT, SIGTERM and SIGHUP).
	Signals <-chan os.Signal
	// EmptyPrograms attaches empty BPF programs to the same sites and
	// records nothing: the floor that overhead is measured against.
	EmptyPrograms bool
	// OTLP, when set, also sends every record as a span to an OTLP/HTTP
	// endpoint while tracing (the OTLP sink, otlpsink.go).
	OTLP *OTLPOptions
	// Metrics, when set, serves Prometheus metrics on /metrics while the
	// session runs (internal/metrics). The session closes it when it
	// ends; a caller that opened it closes it too, for a session that
	// failed before serving (closing twice is harmless).
	Metrics net.Listener
	Logger  *slog.Logger
	// Control, when set, lets the caller change the patterns and sample
	// rates of the running targets in place (Control.Update).
	Control *Control
	// FuncHeadroom is how many functions beyond those selected each
	// tracer's per-function maps have room for, so that Control.Update
	// can add them; counted in the memory budget.
	FuncHeadroom int
	// ReloadTargets is how many targets Control.Update may add to the
	// running agent: the budget reserves a tracer for each at start
	// (planBudget), as for a cgroup's later programs. Not 0, it makes
	// AttachTargets run even one target in a host, which can add
	// targets and remove them.
	ReloadTargets int
	// ctlTarget is the Target a one-target session registers with
	// Control as (AttachTargets sets it).
	ctlTarget Target
}

// Result summarises a finished session.
type Result struct {
	PID int
	// Exe is the traced file of an AttachExe session (PID is then 0),
	// and Processes how many of its processes ran while it lasted.
	Exe        string
	Processes  int
	Recorded   uint64 // calls written to the store
	Sampled    uint64
	Dropped    uint64
	Calls      uint64 // calls made, from the kernel counters
	Sites      int
	Functions  int
	AttachTime time.Duration
	DetachTime time.Duration
	ExitReason string // "target exited", "duration elapsed", "interrupted"
	ExitCode   int    // the target's exit code when known (run), else -1
	Signaled   bool   // the target died of a signal
	Gaps       int    // probe pauses by the circuit breaker, each stored as a gap
	Health     uprobe.Health
	// ErrorsLost counts per function the error records that could not be
	// kept in the store (also in Dropped): see queue.Queue.ErrorsLost.
	ErrorsLost map[string]uint64
	// Sinks are every sink's ledger, the store's first; for a target of
	// AttachTargets, each sink's account of the target's records.
	Sinks []Ledger
	// Session is the store's session id of a target of AttachTargets.
	Session uint64
	// Targets are the results of each target of AttachTargets, whose
	// Recorded counts the records the target handed to the sinks (the
	// store sink's ledger, above, is for them all). PID, Exe and
	// ExitCode are then unset here.
	Targets []Result
}

// Lost is every call made but not recorded, for any reason.
func (r *Result) Lost() uint64 { return r.Sampled + r.Dropped }

// Summary is the report printed when the agent exits: one line, plus one
// for the tracer's own trouble when there was any.
func (r *Result) Summary() string {
	who := fmt.Sprintf("pid %d", r.PID)
	switch {
	case len(r.Targets) > 0:
		who = fmt.Sprintf("%d targets (%d processes)", len(r.Targets), r.Processes)
	case r.Exe != "":
		who = fmt.Sprintf("%s (%d processes)", r.Exe, r.Processes)
	}
	s := fmt.Sprintf("%s: %s; recorded %d calls, lost %d (sampled %d, dropped %d) over %d functions, %d probe sites",
		who, r.ExitReason, r.Recorded, r.Lost(), r.Sampled, r.Dropped, r.Functions, r.Sites)
	if n := r.errorsLostTotal(); n > 0 {
		s += fmt.Sprintf("\n  ERROR RECORDS LOST: %d error records could not be kept in the store, the spill journal or memory: %s",
			n, formatLost(r.ErrorsLost))
	}
	for i := range r.Sinks {
		l := &r.Sinks[i]
		if l.Sink != storeSinkName {
			s += "\n  " + l.summary()
		} else if l.GapsLost+l.SamplesLost > 0 {
			s += fmt.Sprintf("\n  the store could not take %d probe gaps and %d resource samples (logged)", l.GapsLost, l.SamplesLost)
		}
	}
	for i := range r.Targets {
		s += "\n  " + strings.ReplaceAll(r.Targets[i].Summary(), "\n", "\n  ")
	}
	if r.Gaps > 0 && len(r.Targets) == 0 {
		s += fmt.Sprintf("\n  the circuit breaker paused probes %d times: calls in those gaps were not seen ('obs-agent query stats' lists them)", r.Gaps)
	}
	h := r.Health
	if h.RingOKFull+h.RingErrFull+h.MapFull+h.ReadFail > 0 {
		s += fmt.Sprintf("\n  kernel side: ok ring full %d, error ring full %d, goroutine/frame map full %d, unreadable goroutine %d (all counted as dropped)",
			h.RingOKFull, h.RingErrFull, h.MapFull, h.ReadFail)
	}
	if h.UnmatchedRet > 0 {
		s += fmt.Sprintf("\n  %d returns had no recorded entry (calls that began before the probes were attached, or while the breaker had paused the entry probe)", h.UnmatchedRet)
	}
	if h.DrainRet > 0 {
		s += fmt.Sprintf("\n  %d returns of calls that began while detaching, after the entry probes had stopped (not recorded)", h.DrainRet)
	}
	return s
}

func (r *Result) errorsLostTotal() uint64 {
	var n uint64
	for _, v := range r.ErrorsLost {
		n += v
	}
	return n
}

// formatLost lists per-function counts, largest first.
func formatLost(m map[string]uint64) string {
	type fc struct {
		f string
		n uint64
	}
	var l []fc
	for f, n := range m {
		if n > 0 {
			l = append(l, fc{f, n})
		}
	}
	slices.SortFunc(l, func(a, b fc) int {
		if c := cmp.Compare(b.n, a.n); c != 0 {
			return c
		}
		return cmp.Compare(a.f, b.f)
	})
	parts := make([]string, len(l))
	for i, x := range l {
		parts[i] = fmt.Sprintf("%s %d", x.f, x.n)
	}
	return strings.Join(parts, ", ")
}

// testHookBeforeAttach, when set by a test, runs just before the probes
// are attached.
var testHookBeforeAttach func(pid int)

// testNoKernelPIDFilter, set by a test, attaches as on kernels before 6.10.
var testNoKernelPIDFilter bool

// session is the state shared by the parts of one run.
type session struct {
	opts Options
	log  *slog.Logger
	bin  *symbols.Binary
	sel  *selector.Selection
	// names is the function id -> name table: append-only (a reload
	// that adds functions appends them, see update.go), read through
	// fnames by goroutines that run while it grows.
	names atomic.Pointer[[]string]
	// ufuncs are the tracer's function table, by the same ids.
	ufuncs []uprobe.Func
	st     *store.Store
	sess   record.Session
	tr     *uprobe.Tracer
	conv   *converter
	// sinks receive every record, the store first (see sink.go).
	sinks  fanout
	store  *storeSink
	pid    int
	result Result
	stats  statsState
	budget *Budget
	// For /metrics: breaker pauses and the sites attached (Result.Gaps
	// and Sites are only read once the breaker has stopped).
	probes probeCounts
	// follow tracks the processes of a file target (AttachExe); nil when
	// the session traces one process.
	follow *follower
	// openMu serialises taking the frames left open (takeOpen), which
	// the follower does as each process exits and stop does at the end.
	openMu sync.Mutex
	// procRow is the process row of a one-process session (procrow.go).
	procRow store.Process
	// shared is set for a target of a host of several (host.go): the
	// store, its sink and the budget are the host's, and the session's
	// aggregates count the records it handed to the sinks (handed), not
	// the store sink's ledger, which mixes the targets.
	shared bool
	handed []atomic.Uint64 // per function id, when shared
	// handedErr are the error records among handed, for the target's
	// accounts of the host's sinks (hostledger.go).
	handedErr []atomic.Uint64
	// cgroup, for a file of a cgroup target, limits the probes to the
	// cgroup's processes; binName then names the file as its processes
	// see it (it is opened through a descriptor).
	cgroup  *cgroup
	binName string
	// info names the program in /metrics (obs_agent_session_info and
	// the binary label), once the session row exists.
	info metrics.Info
}

// target is what a session traces: a process to watch until it exits.
type target interface {
	PID() int
	ExePath() string
	// Exited is closed when the process has exited.
	Exited() <-chan struct{}
	// Resume lets a process held before its first instruction run; a
	// no-op for a process that was already running.
	Resume() error
	// ExitStatus is valid after Exited: the code, and whether a signal
	// killed it.
	ExitStatus() (code int, signaled bool)
	Close()
}

// prepare opens the binary, selects functions and plans the memory
// budget.
func prepare(opts Options, exe string) (*session, error) {
	s, err := selectFuncs(opts, exe)
	if err != nil {
		return nil, err
	}
	limit := cmp.Or(opts.MemoryLimit, DefaultMemoryLimit)
	if s.budget, err = planBudget(limit, goMemoryInUse(), s.capacity(), opts.QueueBytes, opts.OTLP != nil); err != nil {
		s.bin.Close()
		return nil, err
	}
	s.log.Info(s.budget.String(), "need_bytes", s.budget.Need(), "limit_bytes", limit)
	return s, nil
}

// selectFuncs opens the binary and selects the functions to trace.
func selectFuncs(opts Options, exe string) (*session, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.Include) == 0 {
		return nil, errors.New("no functions selected: give at least one -f PATTERN (e.g. -f 'main.*')")
	}
	s := &session{opts: opts, log: opts.Logger.With("component", "agent")}
	if err := checkOutputDirs(opts); err != nil {
		return nil, err
	}
	if err := checkKernel(s.log, opts.SingleProbes); err != nil {
		return nil, err
	}
	bin, err := symbols.OpenProgram(exe)
	if err != nil {
		return nil, err
	}
	s.bin = bin
	selOpts := selector.DefaultOptions()
	if opts.MaxProbes != 0 {
		selOpts.MaxProbes = opts.MaxProbes
	}
	selOpts.SampleRate = opts.SampleRate
	sel, err := selector.Select(bin, opts.Include, opts.Exclude, selOpts)
	if err != nil {
		bin.Close()
		return nil, err
	}
	if len(sel.Funcs) == 0 && len(sel.Skipped) == 0 {
		bin.Close()
		return nil, errors.New("every function the -f patterns match is excluded by a -x pattern: nothing to trace")
	}
	if len(sel.Funcs) == 0 {
		bin.Close()
		var why []string
		for i, sk := range sel.Skipped {
			if i == 5 {
				why = append(why, fmt.Sprintf("… and %d more", len(sel.Skipped)-5))
				break
			}
			why = append(why, sk.Name+": "+sk.Reason)
		}
		return nil, fmt.Errorf("the patterns match only functions that cannot be probed:\n  %s", strings.Join(why, "\n  "))
	}
	reportSkipped(s.log, exe, sel.Skipped)
	s.sel = sel
	names := make([]string, len(sel.Funcs))
	for i, f := range sel.Funcs {
		names[i] = f.Func.Name
	}
	s.names.Store(&names)
	return s, nil
}

// openStore opens the store and closes the rows that killed agents left
// open.
func (s *session) openStore() error {
	st, err := store.Open(s.opts.DB, store.Options{CacheBytes: s.budget.SQLite})
	if err != nil {
		return fmt.Errorf("--db: %w", err)
	}
	s.st = st
	self, err := selfIdentity()
	if err != nil {
		return err
	}
	s.checkFreeSpace()
	s.closeLeftSessions(self)
	return nil
}

// beginSession registers the selected functions and stores the session
// row, whose id is the base of the session's call ids.
func (s *session) beginSession(pid int) error {
	self, err := selfIdentity()
	if err != nil {
		return err
	}
	st := s.st
	if err := s.registerFunctions(s.fnames()); err != nil {
		return err
	}
	s.sess = record.Session{
		PID: uint32(pid), Binary: s.binaryName(), GoVersion: s.bin.GoVersion,
		Patterns: strings.Join(s.opts.Include, " "), Start: time.Now().UnixNano(),
		AgentPID: self.pid, AgentStart: self.start, BootID: self.boot,
		Retention: s.retentionWindow(), ArchiveDir: archiveDirOf(s.opts.ArchiveDir),
	}
	id, err := st.BeginSession(s.sess)
	if err != nil {
		return fmt.Errorf("begin session: %w", err)
	}
	s.sess.ID = id
	return nil
}

// binaryName is the program's name for the session and process rows: a
// cgroup target's file as its processes see it; for a --pid target, whose
// binary is opened through /proc/PID/exe (so that a container's file,
// absent from the host, can be read), the path that link names, as the
// process's own mount namespace sees it (what ps and the container show,
// and what 'query --binary' is given), read once while the process runs;
// else the path the binary was opened by.
func (s *session) binaryName() string {
	if s.binName == "" {
		s.binName = s.bin.Path
		if rest, ok := strings.CutPrefix(s.bin.Path, "/proc/"); ok {
			if pid, ok := strings.CutSuffix(rest, "/exe"); ok && pid != "" && strings.Trim(pid, "0123456789") == "" {
				if real, err := os.Readlink(s.bin.Path); err == nil && real != "" {
					s.binName = real
				}
			}
		}
	}
	return s.binName
}

// tracerConfig turns the selection into probe sites.
func (s *session) tracerConfig(pid int, exe string) (uprobe.Config, error) {
	cfg := uprobe.Config{
		Binary:     exe,
		PID:        pid,
		GoidOffset: s.bin.Layout.Goid,
		IDBase:     s.sess.ID<<40 | 1,
		Single:     s.opts.SingleProbes,
		Empty:      s.opts.EmptyPrograms,
		Sizes:      s.budget.Sizes,
		Capacity:   s.capacity(),

		NoKernelPIDFilter: testNoKernelPIDFilter,
	}
	if s.cgroup != nil {
		cfg.Cgroup, cfg.CgroupLevel = s.cgroup.id, s.cgroup.level
	}
	for _, sel := range s.sel.Funcs {
		uf, err := s.probeFunc(sel)
		if err != nil {
			return cfg, err
		}
		cfg.Funcs = append(cfg.Funcs, uf)
	}
	s.ufuncs = slices.Clone(cfg.Funcs)
	rt, err := s.runtimeHooks()
	if err != nil {
		return cfg, err
	}
	cfg.Runtime = rt
	// The read plans of error types are keyed by run-time address; for a
	// PIE file traced in every process, each at its own address, by
	// static address, which the programs find with each process's bias.
	var bias uint64
	switch {
	case s.bin.PIE && s.follow != nil:
		cfg.PIEFile = true
	case s.bin.PIE:
		if bias, err = loadBias(pid, exe); err != nil {
			return cfg, fmt.Errorf("pid %d: find where its executable is mapped: %w", pid, err)
		}
	}
	cfg.ErrText = errtext.Plans(s.bin.Types(), bias)
	return cfg, nil
}

func (s *session) fileOffsets(vaddrs []uint64) ([]uint64, error) {
	out := make([]uint64, len(vaddrs))
	for i, v := range vaddrs {
		o, err := s.bin.FileOffset(v)
		if err != nil {
			return nil, err
		}
		out[i] = o
	}
	return out, nil
}

// runtimeHooks finds the runtime functions the tracer needs. newproc1 links
// goroutines to their spawning call, gopanic gives panic values, goexit1
// closes what an exiting goroutine left open. A missing hook degrades the
// trace, so it is logged, not fatal.
func (s *session) runtimeHooks() (uprobe.Runtime, error) {
	var rt uprobe.Runtime
	if f := s.bin.Lookup("runtime.newproc1"); f != nil && len(f.Rets) > 0 {
		e, err := s.bin.FileOffset(f.Entry)
		if err != nil {
			return rt, err
		}
		rets, err := s.fileOffsets(f.Rets)
		if err != nil {
			return rt, err
		}
		rt.Newproc1, rt.Newproc1Rets = e, rets
		rt.NewprocGPReg = newprocCallerGPReg(s.bin.GoVersion)
	} else {
		s.log.Warn("runtime.newproc1 not probeable: goroutines will not be linked to the call that spawned them")
	}
	for _, h := range []struct {
		name string
		dst  *uint64
		lost string
	}{
		{"runtime.gopanic", &rt.Gopanic, "panic values will not be recorded"},
		{"runtime.goexit1", &rt.Goexit1, "frames left open by runtime.Goexit stay open until the trace ends"},
		{"runtime.copystack", &rt.Copystack, "a goroutine stack moved onto memory overlapping its old stack could misplace a frame"},
	} {
		f := s.bin.Lookup(h.name)
		if f == nil {
			s.log.Warn(h.name+" not found: "+h.lost, "function", h.name)
			continue
		}
		o, err := s.bin.FileOffset(f.Entry)
		if err != nil {
			return rt, err
		}
		*h.dst = o
	}
	return rt, nil
}

// newprocCallerGPReg is the ABI register of newproc1's callergp argument:
// Go 1.17 passed (fn, argp, narg, callergp, callerpc), later versions
// (fn, callergp, callerpc, ...).
func newprocCallerGPReg(goVersion string) uint32 {
	if strings.HasPrefix(goVersion, "go1.17") {
		return 3
	}
	return 1
}

// run drives an attached session until the target exits, the context is
// done or the duration passes.
func (s *session) run(ctx context.Context, t target) (*Result, error) {
	s.pid = t.PID()
	s.result = Result{PID: s.pid, ExitCode: -1, Functions: len(s.fnames())}
	if s.follow != nil {
		s.result.Exe = s.follow.path
	}
	if s.opts.SetGoMemoryLimit {
		debug.SetMemoryLimit(s.budget.GoLimit())
	}
	if err := s.openStore(); err != nil {
		return nil, err
	}
	defer s.st.Close()
	if err := s.beginSession(s.pid); err != nil {
		return nil, err
	}
	if err := s.attach(t); err != nil {
		return nil, err
	}
	s.beginProcessRow()
	defer s.tr.Close()
	if err := s.newSinks(); err != nil {
		return nil, err
	}

	p := s.start()
	if srv := s.serveMetrics(); srv != nil {
		defer srv.Close() // before the tracer closes: a scrape reads its maps
	}
	s.announceReady()
	s.opts.Control.add(s.opts.ctlTarget, s)
	runErr := t.Resume()
	if runErr != nil {
		runErr = fmt.Errorf("resume pid %d: %w", s.pid, runErr)
		s.result.ExitReason = "could not start the target"
	} else {
		s.wait(ctx, t)
	}
	s.opts.Control.remove(s)
	werr := s.stop(p)
	s.finish()
	if runErr != nil {
		return &s.result, runErr
	}
	if werr != nil {
		return &s.result, fmt.Errorf("store: %w", werr)
	}
	return &s.result, nil
}

// attach puts the probes in. A target that exits meanwhile is an error:
// probes on a dead process record nothing, and an empty trace must not be
// reported as a success.
func (s *session) attach(t target) error {
	cfg, err := s.tracerConfig(s.pid, t.ExePath())
	if err != nil {
		return err
	}
	start := time.Now()
	if testHookBeforeAttach != nil {
		testHookBeforeAttach(s.pid)
	}
	tr, err := uprobe.Attach(cfg)
	exited := func() bool {
		select {
		case <-t.Exited():
			return true
		default:
			return false
		}
	}
	if err == nil && exited() {
		tr.Close()
		err = uprobe.ErrProcessGone
	}
	if c, ok := t.(interface{ exeChanged() bool }); ok && err == nil && c.exeChanged() {
		tr.Close()
		return fmt.Errorf("pid %d started another program (execve) while the probes were being attached; nothing was traced: attach again", s.pid)
	}
	if err != nil {
		if exited() {
			return fmt.Errorf("pid %d exited while the probes were being attached; nothing was traced: %w", s.pid, uprobe.ErrProcessGone)
		}
		return err
	}
	s.tr = tr
	s.result.AttachTime = time.Since(start)
	s.result.Sites = tr.Sites()
	s.probes.sites.Store(int64(tr.Sites()))
	s.log.Info("probes attached", "pid", s.pid, "functions", len(s.fnames()), "sites", tr.Sites(),
		"uprobe_multi", tr.Multi(), "took", s.result.AttachTime.Round(time.Millisecond))
	return nil
}

// newSinks sets up the decoder (the record converter) and the sinks: the
// store always, OTLP when configured.
func (s *session) newSinks() error {
	var err error
	if s.conv, err = newConverter(&s.names, s.bin, s.tr, s.pid); err != nil {
		return err
	}
	s.store = s.newStoreSink()
	s.sinks = fanout{s.store}
	if s.opts.OTLP != nil {
		k, err := s.newOTLPSink(*s.opts.OTLP)
		if err != nil {
			return err
		}
		s.sinks = append(s.sinks, k)
	}
	return nil
}

// pipeline is the set of goroutines that run while the target is traced.
type pipeline struct {
	lanes   []*uprobe.Lane
	readers sync.WaitGroup // one per ring
	helpers sync.WaitGroup // aggregates, retention, resources, breaker
	stop    context.CancelFunc
	brk     *breaker
}

// start launches the sinks' writers, the ring readers and the helpers.
func (s *session) start() *pipeline {
	for _, k := range s.sinks {
		k.start()
	}
	return s.startTracing(s.retentionLoop, s.statusLoop)
}

// startTracing launches the ring readers and the helpers of the target:
// aggregates, resource samples, the follower and the breaker, plus the
// given ones.
func (s *session) startTracing(more ...func(context.Context)) *pipeline {
	p := &pipeline{lanes: []*uprobe.Lane{s.tr.Errors(), s.tr.OK()}}
	for _, l := range p.lanes {
		p.readers.Add(1)
		go func(l *uprobe.Lane) {
			defer p.readers.Done()
			s.readLane(l)
		}(l)
	}

	var ctx context.Context
	ctx, p.stop = context.WithCancel(context.Background())
	helpers := append([]func(context.Context){s.statsLoop, s.samplerLoop, s.retireLoop}, more...)
	if s.follow != nil {
		helpers = append(helpers, s.follow.run)
	}
	if s.opts.MaxOverhead > 0 {
		p.brk = newBreaker(s.tr, s.store, s.fname, s.pid, s.opts.MaxOverhead, &s.probes, s.log)
		helpers = append(helpers, p.brk.run)
	}
	for _, h := range helpers {
		p.helpers.Add(1)
		go func(h func(context.Context)) {
			defer p.helpers.Done()
			h(ctx)
		}(h)
	}
	return p
}

// announceReady tells scripts and callers that every probe is live.
func (s *session) announceReady() {
	if s.opts.ReadyFile != "" {
		if err := writeReady(s.opts.ReadyFile, s.pid); err != nil {
			s.log.Error("write ready file", "err", err)
		}
	}
	if s.opts.OnReady != nil {
		s.opts.OnReady(s.pid)
	}
}

// stop detaches the probes, drains the rings, records the calls left open,
// stops the helpers and waits for every sink to drain. It returns the store
// sink's error.
func (s *session) stop(p *pipeline) error {
	s.stopTracing(p)
	return s.waitSinks()
}

// stopTracing is stop but for the sinks, which may serve other targets.
func (s *session) stopTracing(p *pipeline) {
	s.result.DetachTime = s.tr.Detach()
	// Every probe is gone: what the rings hold now is all there is.
	for _, l := range p.lanes {
		l.Flush()
	}
	p.readers.Wait()
	s.closeOpen()
	p.stop()
	p.helpers.Wait()
	if p.brk != nil {
		p.brk.close(time.Now())
	}
	s.result.Gaps = int(s.probes.pauses.Load())
}

// finish writes the final aggregates and closes the session row.
func (s *session) finish() {
	totals, err := s.writeStats()
	if err != nil {
		s.log.Error("write final aggregates", "err", err)
	}
	s.finishResult(totals)
	if !s.shared { // a host accounts for its sinks itself
		s.result.Sinks = s.ledgers()
		s.result.ErrorsLost = s.result.Sinks[0].ErrorsLost
		logErrorsLost(s.log, s.result.ErrorsLost)
	}
	s.log.Debug("tracer health", "counters", fmt.Sprintf("%+v", s.result.Health))
	s.endProcessRows()
	s.sess.End = time.Now().UnixNano()
	s.sess.CallsRecorded = s.result.Recorded
	s.sess.CallsLost = s.result.Lost()
	s.sess.ExitReason = s.result.ExitReason
	s.sess.ErrorsLost = s.result.ErrorsLost
	if err := s.st.EndSession(s.sess); err != nil {
		// Keep the end where the next run on this store finds it.
		if perr := savePendingEnd(s.spillDir(), s.sess); perr != nil {
			s.log.Error("cannot store the session's end, nor keep it for the next run: the next run closes the row as killed", "session", s.sess.ID, "err", err, "keep_err", perr)
			return
		}
		s.log.Error("cannot store the session's end; it is kept in the spill directory and stored by the next run on this store", "session", s.sess.ID, "err", err, "dir", s.spillDir())
	}
	if !s.shared { // a host stores its targets' once its sinks have drained
		s.storeSinkAccounts()
	}
}

// wait blocks until the target exits, the duration passes or ctx is done,
// and records why in the result.
func (s *session) wait(ctx context.Context, t target) {
	timeout, stopTimer := durationTimer(s.opts.Duration)
	defer stopTimer()
	select {
	case <-t.Exited():
		s.result.ExitReason, s.result.ExitCode, s.result.Signaled = exitReason(t)
	case <-timeout:
		s.result.ExitReason = "duration elapsed"
	case <-ctx.Done():
		s.result.ExitReason = stopReason(ctx)
	}
}

// exitReason says how a target that has exited ended.
func exitReason(t target) (reason string, code int, signaled bool) {
	code, signaled = t.ExitStatus()
	switch {
	case signaled:
		return fmt.Sprintf("target killed by signal %d", code), code, true
	case code >= 0:
		return fmt.Sprintf("target exited with code %d", code), code, false
	}
	return "target exited", code, false
}

// readLane moves one ring's events into the queue until the ring is closed
// or flushed empty after detach.
//
// The BPF side wakes the reader only when a ring fills past a threshold (a
// wakeup costs the traced thread microseconds), so the reader also polls:
// its deadline makes Read return what is pending at least every
// pollInterval.
func (s *session) readLane(l *uprobe.Lane) {
	const pollInterval = 20 * time.Millisecond
	var ev uprobe.Event
	deadline := time.Now().Add(pollInterval)
	l.SetDeadline(deadline)
	batch := make([]record.Call, 0, handBatch)
	defer func() { s.sinks.Push(batch) }()
	for {
		// The records read go to the sinks when the batch is full or the
		// ring has no more for now: never held while the reader waits.
		if len(batch) == handBatch || len(batch) > 0 && l.Pending() == 0 {
			s.sinks.Push(batch)
			clear(batch) // no strings kept alive
			batch = batch[:0]
		}
		err := l.Read(&ev)
		if err != nil {
			if uprobe.IsTimeout(err) {
				deadline = time.Now().Add(pollInterval)
				l.SetDeadline(deadline)
				continue
			}
			if errors.Is(err, uprobe.ErrClosed) || errors.Is(err, uprobe.ErrFlushed) {
				return
			}
			s.log.Error("read ring", "err", err)
			return
		}
		if ev.PanicValue {
			s.conv.panicValue(&ev)
			continue
		}
		batch = append(batch, s.conv.call(&ev))
		s.account(&batch[len(batch)-1], ev.FuncID)
	}
}

// handBatch bounds the records a reader hands to the sinks at once
// (readLane): each sink takes a batch under one lock, where a record at a
// time made the queues' locks the largest part of what queueing a record
// cost (their cache lines moving between the reader's CPU and the
// writers').
const handBatch = 256

// account counts a record of function id fid, about to be handed to the
// sinks, in the follower's per-process aggregates and, in a host, in
// handed.
func (s *session) account(c *record.Call, fid uint32) {
	if s.follow != nil {
		s.follow.saw(c, fid)
	}
	if s.shared && int(fid) < len(s.handed) {
		s.handed[fid].Add(1)
		if c.IsError() {
			s.handedErr[fid].Add(1)
		}
	}
}

// logErrorsLost logs the error records lost, per function.
func logErrorsLost(log *slog.Logger, lost map[string]uint64) {
	for f, n := range lost {
		log.Error("error records lost: they could not be kept in the store, the spill journal or memory", "function", f, "count", n)
	}
}

// closeOpen records the calls still open at the end: status panic when
// their goroutine was panicking (the process died of it), else unfinished,
// with the time their goroutine was last seen.
func (s *session) closeOpen() { s.takeOpen(uint32(s.pid)) }

// takeOpen records the calls process pid (0: every process) left open.
func (s *session) takeOpen(pid uint32) {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	open, err := s.tr.TakeOpen(pid)
	if err != nil {
		s.log.Error("read open frames", "pid", pid, "err", err)
		return
	}
	calls := make([]record.Call, len(open))
	for i := range open {
		calls[i] = s.conv.open(&open[i])
		s.account(&calls[i], open[i].FuncID)
	}
	s.sinks.Push(calls)
	s.conv.addOpen(open)
}

// checkOutputDirs refuses, before anything runs, a --ready-file or
// --archive directory that files could not be written in safely (see
// internal/safefile); otherwise the failure would only show later, in the
// log. The archive directory is created, as the first retention pass would.
func checkOutputDirs(opts Options) error {
	if opts.ReadyFile != "" {
		d, err := safefile.OpenDir(filepath.Dir(opts.ReadyFile))
		if err == nil {
			err = d.CheckReplaceable(filepath.Base(opts.ReadyFile))
			d.Close()
		}
		if err != nil {
			return fmt.Errorf("--ready-file %s: %w", opts.ReadyFile, err)
		}
	}
	if opts.ArchiveDir != "" {
		d, err := safefile.MkdirAll(opts.ArchiveDir)
		if err != nil {
			return fmt.Errorf("--archive %s: %w", opts.ArchiveDir, err)
		}
		d.Close()
	}
	return nil
}

// writeReady writes the pid to path atomically, without following a link
// another user planted there or at a temporary name (internal/safefile).
// It holds no traced data, so scripts of any user may read it.
func writeReady(path string, pid int) error {
	return safefile.WriteFileAtomic(path, []byte(fmt.Sprintf("%d\n", pid)), 0o644)
}

// retentionWindow is the window retentionLoop keeps, as the session row
// records it for readers of the store.
func (s *session) retentionWindow() time.Duration {
	if s.opts.Retention > 0 {
		return s.opts.Retention
	}
	return retention.DefaultWindow
}

// archiveDirOf is the archive directory as the session row records it:
// absolute, since a reader of the store runs from another directory.
func archiveDirOf(dir string) string {
	if dir == "" {
		return ""
	}
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}

// retentionLoop expires old hours of the store while tracing.
func (s *session) retentionLoop(ctx context.Context) {
	m := &retention.Manager{
		Store: s.st, Window: s.retentionWindow(), ArchiveDir: s.opts.ArchiveDir,
		Logger: s.log.With("component", "retention"),
	}
	m.Run(ctx)
}

// samplerLoop samples the target's resource use every SampleInterval.
func (s *session) samplerLoop(ctx context.Context) {
	if s.opts.SampleInterval < 0 || s.follow != nil {
		return // a file target has no one process to sample
	}
	every := s.opts.SampleInterval
	if every == 0 {
		every = 5 * time.Second
	}
	goroutines := func() *int64 {
		n, err := s.tr.Goroutines(uint32(s.pid))
		if err != nil {
			return nil
		}
		v := int64(n)
		return &v
	}
	err := resources.Run(ctx, int32(s.pid), every, goroutines, s.store.WriteSample)
	switch {
	case err == nil || ctx.Err() != nil:
	case errors.Is(err, resources.ErrNoProcess):
		s.log.Debug("resource sampling stopped: the target exited", "err", err)
	default:
		s.log.Warn("resource sampling stopped", "err", err)
	}
}
