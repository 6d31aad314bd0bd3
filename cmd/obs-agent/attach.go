package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/store"
)

// traceFlags are shared by attach and run.
type traceFlags struct {
	include    []string
	exclude    []string
	db         string
	duration   time.Duration
	readyFile  string
	maxProbes  int
	sample     float64
	single     bool
	statsEvery time.Duration
	retention  time.Duration
	archive    string
	sampleRes  time.Duration
	maxOver    float64
	queueMiB   int
	ui         string
}

func (f *traceFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.include, "func", "f", nil, "trace functions whose full symbol name matches this glob (repeatable; * matches anything incl. / . ( ), ? one character; append @RATE to sample ok calls, e.g. 'pkg.*@0.1')")
	fl.StringArrayVarP(&f.exclude, "exclude", "x", nil, "do not trace functions matching this glob (repeatable)")
	fl.StringVar(&f.db, "db", store.DefaultPath(), "store path (SQLite); default from $OBS_AGENT_DB, else /var/lib/obs-agent/obs.db as root")
	fl.DurationVar(&f.duration, "duration", 0, "stop tracing after this long (0: until the target exits or Ctrl-C)")
	fl.StringVar(&f.readyFile, "ready-file", "", "write the target pid to this file once every probe is live")
	fl.IntVar(&f.maxProbes, "max-probes", 0, "allow up to this many probe sites (default 10000; -1: no limit)")
	fl.Float64Var(&f.sample, "sample", 1, "share of ok calls to record, 0..1 (errors and panics are always recorded)")
	fl.BoolVar(&f.single, "single-probes", false, "attach one perf-event uprobe per site instead of uprobe_multi links (slower; for kernels < 6.6)")
	fl.DurationVar(&f.statsEvery, "stats-interval", time.Minute, "how often per-function aggregates are stored: the time resolution of query stats (shorter makes long-range stats queries read more rows)")
	fl.DurationVar(&f.retention, "retention", 6*time.Hour, "keep records this long; older hours are dropped every minute while tracing")
	fl.StringVar(&f.archive, "archive", "", "before dropping an expired hour, copy it to its own SQLite file in this directory")
	fl.Float64Var(&f.maxOver, "max-overhead", 0, "circuit breaker budget: when the probe traps are estimated to cost the target more than this fraction of one CPU (e.g. 0.05), pause the hottest functions' probes for a while, recorded as gaps; 0 (the default) records every call")
	fl.IntVar(&f.queueMiB, "queue-memory", 64, "MiB of ok records held while the store is slow or failing; past it, new ok records are dropped and counted (errors never are: they spill to a journal beside the store)")
	fl.StringVar(&f.ui, "ui", "", "while tracing, also serve the web UI on this loopback HOST:PORT (e.g. 127.0.0.1:7070); its URL with the access token goes to stderr")
	fl.DurationVar(&f.sampleRes, "sample-interval", 5*time.Second, "how often the target's CPU, memory, threads, fds, I/O and goroutines are sampled (0: never)")
}

func (f *traceFlags) options(stderr io.Writer) agent.Options {
	return agent.Options{
		Include: f.include, Exclude: f.exclude, MaxProbes: f.maxProbes,
		SampleRate: f.sample, DB: f.db, Duration: f.duration, ReadyFile: f.readyFile,
		SingleProbes: f.single, StatsInterval: f.statsEvery, Logger: slog.Default(),
		Retention: f.retention, ArchiveDir: f.archive, SampleInterval: sampleInterval(f.sampleRes),
		MaxOverhead: f.maxOver, QueueBytes: int64(f.queueMiB) << 20,
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
	pid int
}

func newAttachCommand() *cobra.Command {
	f := &attachFlags{}
	cmd := &cobra.Command{
		Use:   "attach --pid PID -f PATTERN [-f PATTERN ...] [flags]",
		Short: "Trace the functions of a running Go process",
		Long: `Attach uprobes to the functions of a running Go program that match the -f
patterns, record every call until the program exits, Ctrl-C arrives or
--duration passes, then detach and report what was recorded and lost.
The program keeps running, unchanged, after obs-agent detaches.`,
		Example: `  sudo obs-agent attach --pid 4242 -f 'main.*'
  sudo obs-agent attach --pid 4242 -f 'github.com/acme/api/*' -x '*.String' --duration 30s
  sudo obs-agent attach --pid 4242 -f 'main.*@0.01'      # keep 1% of ok calls, every error`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.pid <= 0 {
				return errors.New("--pid is required: the process id of the Go program to trace")
			}
			if err := checkPrivileges(); err != nil {
				return err
			}
			stopUI, err := f.startUI(cmd)
			if err != nil {
				return err
			}
			defer stopUI()
			res, err := agent.Attach(cmd.Context(), f.pid, f.options(cmd.ErrOrStderr()))
			if res != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "obs-agent:", res.Summary())
			}
			return err
		},
	}
	cmd.Flags().IntVarP(&f.pid, "pid", "p", 0, "process id of the Go program to trace")
	f.register(cmd)
	return cmd
}

// sampleInterval maps the flag's 0 ("never") to the agent's negative.
func sampleInterval(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
