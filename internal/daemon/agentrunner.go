package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/metrics"
	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/selector"
	"github.com/obs-agent/obs-agent/internal/symbols"
)

// ErrOneTarget is matched (errors.Is) by Check's error for a set of more
// than one target.
var ErrOneTarget = errors.New("one target per daemon")

// AgentRunner runs a set with internal/agent as it is today: one target
// per session (agent.AttachExe for an exe target, agent.Attach for a pid),
// and a store takes one writing session at a time.
type AgentRunner struct {
	Log *slog.Logger
	// Version is obs-agent's version, sent as the OTLP user agent and
	// instrumentation scope version.
	Version string
}

// Check refuses what this agent cannot run, then reads the target's
// binary and matches the patterns, as the session would, so a reload
// with a pattern that matches nothing is refused while the old set runs.
func (r *AgentRunner) Check(set Set) error {
	if len(set.Targets) != 1 {
		// Two sessions would have to share the store, which takes one
		// writer (and the agent runs one target per session).
		return fmt.Errorf("targets: %d targets: %w: this obs-agent traces one target per session and a store takes one writing session, so two targets cannot share store.db; run one daemon per target, each with its own config and store.db (docs/unsupported.md)", len(set.Targets), ErrOneTarget)
	}
	t := set.Targets[0]
	const key = "targets[0]"
	var exe string
	switch {
	case t.Cgroup != "":
		return fmt.Errorf("%s.cgroup: cgroup targets are not supported by this obs-agent yet; trace the service's executable with exe, which reaches its processes in any container (docs/unsupported.md)", key)
	case t.Exe != "":
		if err := agent.CheckExe(t.Exe); err != nil {
			return fmt.Errorf("%s.exe: %w", key, err)
		}
		exe = t.Exe
	default:
		p, err := agent.ProcessExe(t.PID)
		if err != nil {
			return fmt.Errorf("%s.pid: %w", key, err)
		}
		exe = p
	}
	bin, err := symbols.OpenProgram(exe)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	defer bin.Close()
	if t.Exe != "" && bin.PIE {
		return fmt.Errorf("%s.exe %s: a position-independent executable (-buildmode=pie) is not supported for exe targets yet; trace one of its processes with pid", key, t.Exe)
	}
	sel, err := selector.Select(bin, t.Include, t.Exclude, selector.Options{MaxProbes: set.Limits.MaxProbes, SampleRate: t.SampleRate()})
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if len(sel.Funcs) == 0 {
		return fmt.Errorf("%s: no function of %s can be probed with these patterns ('obs-agent list --binary %s' shows why)", key, exe, exe)
	}
	return nil
}

// Run traces the set's one target until ctx is done (or its process
// exits, for a pid target).
func (r *AgentRunner) Run(ctx context.Context, set Set, ready func()) error {
	opts, err := r.options(set)
	if err != nil {
		return err
	}
	opts.OnReady = func(int) { ready() }
	if addr := set.Metrics.Addr(); addr != "" {
		if opts.Metrics, err = metrics.Listen(addr); err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		defer opts.Metrics.Close()
	}
	t := set.Targets[0]
	var res *agent.Result
	if t.Exe != "" {
		res, err = agent.AttachExe(ctx, t.Exe, opts)
	} else {
		res, err = agent.Attach(ctx, t.PID, opts)
	}
	if res != nil {
		r.Log.Info("session ended: "+res.Summary(), "component", "daemon")
	}
	return err
}

// options maps a set to the agent's options, as the attach flags do.
func (r *AgentRunner) options(set Set) (agent.Options, error) {
	t, st, lim := set.Targets[0], set.Store, set.Limits
	gid := -1
	if st.Group != "" {
		var err error
		if gid, err = safefile.LookupGroup(st.Group); err != nil {
			return agent.Options{}, fmt.Errorf("store.group: %w", err)
		}
	}
	// Process-wide, like --group: the daemon runs one set at a time.
	safefile.SetDataGroup(gid)
	sampleEvery := lim.SampleInterval
	if sampleEvery == 0 {
		sampleEvery = -1 // the agent's "never"
	}
	opts := agent.Options{
		Include: t.Include, Exclude: t.Exclude, SampleRate: t.SampleRate(), MaxProbes: lim.MaxProbes,
		DB: st.DB, SpillDir: st.SpillDir, Retention: st.Retention, ArchiveDir: st.Archive,
		StatsInterval: st.StatsInterval, SampleInterval: sampleEvery, MaxOverhead: lim.MaxOverhead,
		MemoryLimit: int64(lim.MemoryMiB) << 20, QueueBytes: int64(lim.QueueMemoryMiB) << 20,
		SetGoMemoryLimit: true, SingleProbes: lim.SingleProbes, Logger: r.Log,
	}
	exp, err := set.OTLP.Exporter("obs-agent/" + r.Version)
	if err != nil {
		return opts, err
	}
	if exp != nil {
		opts.OTLP = &agent.OTLPOptions{Exporter: *exp, ServiceName: set.OTLP.ServiceName, Version: r.Version}
	}
	return opts, nil
}

var _ Runner = (*AgentRunner)(nil)
