package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/metrics"
	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/selector"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// traceFlags are shared by attach and run.
type traceFlags struct {
	include     []string
	exclude     []string
	db          string
	duration    time.Duration
	readyFile   string
	maxProbes   int
	sample      float64
	single      bool
	statsEvery  time.Duration
	retention   time.Duration
	archive     string
	sampleRes   time.Duration
	maxOver     float64
	queueMiB    int
	group       string
	memoryMiB   int
	spillDir    string
	ui          string
	metrics     string // --metrics-listen as given; metricsAddr once checked
	metricsAddr string
	otlp        otlpFlags
}

// maxMemoryMiB bounds --memory-limit: 1 TiB.
const maxMemoryMiB = validate.MaxMemoryMiB

// validateMemory range-checks --memory-limit and --queue-memory (which
// must fit in it) and --spill-dir.
func (f *traceFlags) validateMemory(cmd *cobra.Command) error {
	memRange := validate.Range[int]{Min: int(agent.MinMemoryLimit >> 20), Max: maxMemoryMiB}
	if err := memRange.Check("memory-limit", f.memoryMiB); err != nil {
		return err
	}
	if cmd.Flags().Changed("queue-memory") {
		// The ok lane is one part of --memory-limit: it can't take all of it.
		queueRange := validate.Range[int]{Min: 1, Max: f.memoryMiB - 1}
		if err := queueRange.Check("queue-memory", f.queueMiB); err != nil {
			return err
		}
	}
	if cmd.Flags().Changed("spill-dir") && f.spillDir == "" {
		return errors.New("--spill-dir is empty: give a directory, ideally on another file system than the store")
	}
	return nil
}

func (f *traceFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.include, "func", "f", nil, "trace functions whose full symbol name matches this glob (repeatable; * matches anything incl. / . ( ), ? one character; append @RATE to sample ok calls, e.g. 'pkg.*@0.1')")
	fl.StringArrayVarP(&f.exclude, "exclude", "x", nil, "do not trace functions matching this glob (repeatable)")
	fl.StringVar(&f.db, "db", store.DefaultPath(), "store path (SQLite); default from $OBS_AGENT_DB, else /var/lib/obs-agent/obs.db as root")
	fl.DurationVar(&f.duration, "duration", 0, "stop tracing after this long (0: until the target exits or Ctrl-C)")
	fl.StringVar(&f.readyFile, "ready-file", "", "write the target pid to this file once every probe is live")
	fl.IntVar(&f.maxProbes, "max-probes", selector.DefaultMaxProbes, "allow up to this many probe sites (-1: no limit)")
	fl.Float64Var(&f.sample, "sample", 1, "share of ok calls to record, 0..1 (errors and panics are always recorded)")
	fl.BoolVar(&f.single, "single-probes", false, "attach one perf-event uprobe per site instead of uprobe_multi links (slower; for kernels < 6.6)")
	fl.DurationVar(&f.statsEvery, "stats-interval", time.Minute, "how often per-function aggregates are stored: the time resolution of query stats (shorter makes long-range stats queries read more rows)")
	fl.DurationVar(&f.retention, "retention", 6*time.Hour, "keep records this long; older hours are dropped every minute while tracing")
	fl.StringVar(&f.archive, "archive", "", "before dropping an expired hour, copy it to its own SQLite file in this directory (an hour is dropped only once its archive holds all its rows)")
	fl.Float64Var(&f.maxOver, "max-overhead", 0, "circuit breaker budget: when the probe traps are estimated to cost the target more than this fraction of one CPU (e.g. 0.05), pause the hottest functions' probes for a while, recorded as gaps; 0 (the default) records every call")
	fl.IntVar(&f.queueMiB, "queue-memory", 0, "MiB of ok records held while the store is slow or failing; past it, new ok records are dropped and counted (default: the ok lane's share of --memory-limit)")
	fl.IntVar(&f.memoryMiB, "memory-limit", int(agent.DefaultMemoryLimit>>20), "MiB the agent may use, kernel memory (BPF rings and maps) included: sizes the rings, the goroutine and frame maps, the queues and SQLite's cache; the need is printed at start")
	fl.StringVar(&f.spillDir, "spill-dir", "", "directory of the journal that keeps error records while the store can't take them (default: <db>.spill); put it on another file system so errors survive the store's disk filling up")
	fl.StringVar(&f.ui, "ui", "", "while tracing, also serve the web UI on this loopback HOST:PORT (e.g. 127.0.0.1:7070); its URL with the access token goes to stderr")
	fl.DurationVar(&f.sampleRes, "sample-interval", 5*time.Second, "how often the target's CPU, memory, threads, fds, I/O and goroutines are sampled (0: never)")
	fl.StringVar(&f.metrics, "metrics-listen", "", "serve Prometheus metrics on http://ADDR/metrics while tracing; a port alone (9464) listens on 127.0.0.1 only, other hosts can scrape only when an address says so (0.0.0.0:9464); see docs/metrics.md")
	f.otlp.register(fl)
	registerGroup(fl, &f.group)
}

// registerGroup adds --group to a command that writes traced data.
func registerGroup(fl *pflag.FlagSet, group *string) {
	fl.StringVar(group, "group", "", "make the files holding traced data (store, spill journal, archives) 0640 and owned by this group, and new directories 0750, so its members can read them without root (default: 0600 and 0700, root only)")
}

// applyGroup validates --group and sets it for every file written from
// now on.
func applyGroup(name string) error {
	if name == "" {
		return nil
	}
	gid, err := safefile.LookupGroup(name)
	if err != nil {
		return fmt.Errorf("--group: %w", err)
	}
	safefile.SetDataGroup(gid)
	return nil
}

// The allowed values of the numeric trace flags (internal/validate holds
// them: the daemon's config file takes the same).
var (
	durationRange  = validate.TraceDuration
	maxProbesRange = validate.MaxProbes
	rateRange      = validate.Rate
	statsRange     = validate.StatsInterval
	retentionRange = validate.Retention
	sampleRange    = validate.SampleInterval
	overheadRange  = validate.Overhead
)

// validate range-checks every trace flag; it runs before anything else.
func (f *traceFlags) validate() error {
	return validate.First(
		durationRange.Check("duration", f.duration),
		maxProbesRange.Check("max-probes", f.maxProbes),
		rateRange.Check("sample", f.sample),
		statsRange.Check("stats-interval", f.statsEvery),
		retentionRange.Check("retention", f.retention),
		sampleRange.Check("sample-interval", f.sampleRes),
		overheadRange().Check("max-overhead", f.maxOver),
		patternsError(f.include, f.exclude),
		validate.NotDir("ready-file", f.readyFile),
		archiveDirError(f.archive),
		f.checkMetrics(),
		f.otlp.check(os.Getenv),
	)
}

// checkMetrics checks --metrics-listen and keeps the address to listen on.
func (f *traceFlags) checkMetrics() error {
	if f.metrics == "" {
		return nil
	}
	addr, err := validate.ListenAddr("metrics-listen", f.metrics)
	f.metricsAddr = addr
	return err
}

// listenMetrics opens the --metrics-listen socket, before any probe is
// attached, so a port in use fails the command at once. nil without the
// flag; the caller closes it.
func (f *traceFlags) listenMetrics() (net.Listener, error) {
	if f.metricsAddr == "" {
		return nil, nil
	}
	return metrics.Listen(f.metricsAddr)
}

// archiveDirError checks --archive before anything runs: by safefile's
// rule first (no link, foreign file or directory others can change on the
// way: the archives will hold traced data), then that it can be written.
func archiveDirError(dir string) error {
	if dir == "" {
		return nil
	}
	if err := safefile.CheckDir(dir); err != nil {
		return fmt.Errorf("--archive %s: %w", validate.Clip(dir), err)
	}
	return validate.WritableDir("archive", dir)
}

// patternsError parses the -f and -x patterns (only the error matters).
func patternsError(include, exclude []string) error {
	_, _, err := selector.ParsePatterns(include, exclude)
	return err
}

func (f *traceFlags) options(stderr io.Writer) agent.Options {
	return agent.Options{
		Include: f.include, Exclude: f.exclude, MaxProbes: f.maxProbes,
		SampleRate: f.sample, DB: f.db, Duration: f.duration, ReadyFile: f.readyFile,
		SingleProbes: f.single, StatsInterval: f.statsEvery, Logger: slog.Default(),
		Retention: f.retention, ArchiveDir: f.archive, SampleInterval: sampleInterval(f.sampleRes),
		MaxOverhead: f.maxOver, QueueBytes: int64(f.queueMiB) << 20,
		MemoryLimit: int64(f.memoryMiB) << 20, SetGoMemoryLimit: true, SpillDir: f.spillDir,
		OTLP: f.otlp.opts,
	}
}

// Linux capability numbers (linux/capability.h).
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// checkPrivileges fails early, saying what to do, when tracing cannot work:
// loading BPF programs and attaching uprobes needs CAP_BPF and
// CAP_PERFMON (or CAP_SYS_ADMIN, which root has).
func checkPrivileges() error {
	eff, err := effectiveCaps()
	if err != nil {
		if os.Geteuid() == 0 {
			return nil
		}
		return fmt.Errorf("cannot read this process's capabilities (%v); tracing needs root, or CAP_BPF and CAP_PERFMON: run it with sudo", err)
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	return errors.New("tracing needs root, or the capabilities CAP_BPF and CAP_PERFMON (plus CAP_SYS_PTRACE to trace another user's process): run it with sudo, or grant them with 'sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace+ep obs-agent'")
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

type attachFlags struct {
	traceFlags
	pids    []int
	exe     []string
	cgroups []string
}

func newAttachCommand() *cobra.Command {
	f := &attachFlags{}
	cmd := &cobra.Command{
		Use:   "attach (--pid PID | --exe PATH | --cgroup DIR)... -f PATTERN [-f PATTERN ...] [flags]",
		Short: "Trace the functions of a running Go process",
		Long: `Attach uprobes to the functions of a running Go program that match the -f
patterns, record every call until the program exits, Ctrl-C arrives or
--duration passes, then detach and report what was recorded and lost.
The program keeps running, unchanged, after obs-agent detaches.

With --exe PATH, every process whose executable is that file (the same
device and inode, whatever name it was started by) is traced: those
running now and every one that starts later, from its first instruction,
until Ctrl-C or --duration. 'obs-agent query processes' lists them.

With --cgroup DIR (a cgroup v2 directory), the Go executables that the
cgroup's processes run when obs-agent starts are traced in every process
of the cgroup and its descendants, running now or started later.

--pid, --exe and --cgroup may be given several times, in any mix: one agent
traces them all into one store, each target with its own probes, until
Ctrl-C, --duration, or every target has exited when all are --pid.`,
		Example: `  sudo obs-agent attach --pid 4242 -f 'main.*'
  sudo obs-agent attach --pid 4242 -f 'github.com/acme/api/*' -x '*.String' --duration 30s
  sudo obs-agent attach --pid 4242 -f 'main.*@0.01'      # keep 1% of ok calls, every error
  sudo obs-agent attach --exe /srv/api/bin/api -f 'github.com/acme/api/*'   # every process of that file
  sudo obs-agent attach --exe /srv/api/bin/api --exe /srv/worker/bin/worker --pid 4242 -f 'main.*'
  sudo obs-agent attach --cgroup /sys/fs/cgroup/system.slice/api.service -f 'main.*'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.checkTarget(cmd); err != nil {
				return err
			}
			if err := validate.First(f.validate(), f.validateMemory(cmd)); err != nil {
				return err
			}
			if err := checkPrivileges(); err != nil {
				return err
			}
			if err := applyGroup(f.group); err != nil {
				return err
			}
			stopUI, err := f.startUI(cmd)
			if err != nil {
				return err
			}
			defer stopUI()
			opts := f.options(cmd.ErrOrStderr())
			opts.Status = statusLine(cmd.Context())
			if opts.Metrics, err = f.listenMetrics(); err != nil {
				return err
			}
			if opts.Metrics != nil {
				defer opts.Metrics.Close()
			}
			res, err := agent.AttachTargets(cmd.Context(), f.targets(), opts)
			if res != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "obs-agent:", res.Summary())
			}
			return err
		},
	}
	cmd.Flags().IntSliceVarP(&f.pids, "pid", "p", nil, "process id of a Go program to trace (repeatable)")
	cmd.Flags().StringArrayVar(&f.exe, "exe", nil, "trace every process whose executable is this file (matched by device and inode), running now or started later, until Ctrl-C or --duration (repeatable)")
	cmd.Flags().StringArrayVar(&f.cgroups, "cgroup", nil, "trace the processes of this cgroup v2 directory and its descendants, running now or started later, in the Go executables they run at start (repeatable)")
	f.register(cmd)
	return cmd
}

// checkTarget wants at least one --pid or --exe, each valid.
func (f *attachFlags) checkTarget(cmd *cobra.Command) error {
	for _, p := range f.exe {
		if err := agent.CheckExe(p); err != nil {
			return err
		}
	}
	for _, c := range f.cgroups {
		if err := agent.CheckCgroup(c); err != nil {
			return err
		}
	}
	if len(f.exe) == 0 && len(f.cgroups) == 0 && !cmd.Flags().Changed("pid") {
		return errors.New("--pid, --exe or --cgroup is required: the process id of the Go program to trace, the path of its executable, or its cgroup")
	}
	for _, p := range f.pids {
		if err := pidRange().Check("pid", p); err != nil {
			return err
		}
	}
	return nil
}

// targets are the --exe, --cgroup and --pid targets, in that order.
func (f *attachFlags) targets() []agent.Target {
	var ts []agent.Target
	for _, e := range f.exe {
		ts = append(ts, agent.Target{Exe: e})
	}
	for _, c := range f.cgroups {
		ts = append(ts, agent.Target{Cgroup: c})
	}
	for _, p := range f.pids {
		ts = append(ts, agent.Target{PID: p})
	}
	return ts
}

// pidRange is the process ids the kernel can hand out.
func pidRange() validate.Range[int] {
	r := validate.Range[int]{Min: 1, Max: 1 << 22} // PID_MAX_LIMIT on 64-bit
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			r.Max = n - 1 // pid_max itself is never handed out
		}
	}
	return r
}

// sampleInterval maps the flag's 0 ("never") to the agent's negative.
func sampleInterval(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
