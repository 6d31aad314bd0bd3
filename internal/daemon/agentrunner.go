package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/config"
	"github.com/obs-agent/obs-agent/internal/metrics"
	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/selector"
	"github.com/obs-agent/obs-agent/internal/symbols"
)

// AgentRunner runs a set with internal/agent: every target of the set in
// one agent (agent.AttachTargets), which shares one store writer, one
// store sink and one memory limit among them.
type AgentRunner struct {
	Log *slog.Logger
	// Version is obs-agent's version, sent as the OTLP user agent and
	// instrumentation scope version.
	Version string

	// mu guards ctl, the control of the agent that runs now (the daemon
	// runs one set at a time).
	mu  sync.Mutex
	ctl *agent.Control
}

// ReloadHeadroom is how many functions beyond those it selects at start
// each tracer's per-function maps have room for, so that a reload can add
// that many new functions in place (a function removed and added again
// keeps its room); a reload that adds more restarts the targets. Counted in
// the memory budget: about 24 bytes plus 576 per possible CPU a function.
const ReloadHeadroom = 512

// Check refuses what this agent cannot run, then reads each exe or pid
// target's binary and matches its patterns, as the agent would, so a
// reload with a pattern that matches nothing is refused while the old set
// runs. A cgroup target's binaries are only known once its processes run
// them; its directory is checked.
func (r *AgentRunner) Check(set Set) error {
	for i, t := range set.Targets {
		key := fmt.Sprintf("targets[%d]", i)
		var exe string
		switch {
		case t.Cgroup != "":
			if err := agent.CheckCgroup(t.Cgroup); err != nil {
				return fmt.Errorf("%s.cgroup: %w", key, err)
			}
			continue
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
		if err := checkSelection(key, exe, t, set.Limits.MaxProbes); err != nil {
			return err
		}
	}
	return nil
}

// checkSelection matches t's patterns in the binary exe.
func checkSelection(key, exe string, t config.Target, maxProbes int) error {
	bin, err := symbols.OpenProgram(exe)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	defer bin.Close()
	sel, err := selector.Select(bin, t.Include, t.Exclude, selector.Options{MaxProbes: maxProbes, SampleRate: t.SampleRate()})
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if len(sel.Funcs) == 0 {
		return fmt.Errorf("%s: no function of %s can be probed with these patterns ('obs-agent list --binary %s' shows why)", key, exe, exe)
	}
	return nil
}

// Run traces the set's targets until ctx is done (or, when every target
// is a pid, until their processes have exited).
func (r *AgentRunner) Run(ctx context.Context, set Set, ready func()) error {
	opts, err := r.options(set)
	if err != nil {
		return err
	}
	opts.OnReady = func(int) { ready() }
	ctl := &agent.Control{}
	opts.Control, opts.FuncHeadroom = ctl, ReloadHeadroom
	r.mu.Lock()
	r.ctl = ctl
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.ctl = nil
		r.mu.Unlock()
	}()
	if addr := set.Metrics.Addr(); addr != "" {
		if opts.Metrics, err = metrics.Listen(addr); err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		defer opts.Metrics.Close()
	}
	res, err := agent.AttachTargets(ctx, agentTargets(set), opts)
	if res != nil {
		r.Log.Info("session ended: "+res.Summary(), "component", "daemon")
	}
	return err
}

// agentTargets are the set's targets as the agent takes them.
func agentTargets(set Set) []agent.Target {
	targets := make([]agent.Target, len(set.Targets))
	for i, t := range set.Targets {
		rate := t.SampleRate()
		targets[i] = agent.Target{PID: t.PID, Exe: t.Exe, Cgroup: t.Cgroup, Include: t.Include, Exclude: t.Exclude, SampleRate: &rate}
	}
	return targets
}

// Apply brings the running agent to next in place (agent.Control.Update):
// new patterns and sample rates, targets removed, and exe, pid or cgroup
// targets added into the tracers reserved by limits.reload_targets.
func (r *AgentRunner) Apply(old, next Set) (time.Duration, error) {
	r.mu.Lock()
	ctl := r.ctl
	r.mu.Unlock()
	if ctl == nil {
		return 0, fmt.Errorf("%w: no agent is running", agent.ErrNotInPlace)
	}
	opts, err := r.options(next)
	if err != nil {
		return 0, err
	}
	return ctl.Update(agentTargets(next), opts)
}

// options maps a set to the agent's options, as the attach flags do.
func (r *AgentRunner) options(set Set) (agent.Options, error) {
	st, lim := set.Store, set.Limits
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
		MaxProbes: lim.MaxProbes, DB: st.DB, SpillDir: st.SpillDir, Retention: st.Retention, ArchiveDir: st.Archive,
		StatsInterval: st.StatsInterval, SampleInterval: sampleEvery, MaxOverhead: lim.MaxOverhead,
		MemoryLimit: int64(lim.MemoryMiB) << 20, QueueBytes: int64(lim.QueueMemoryMiB) << 20,
		SetGoMemoryLimit: true, SingleProbes: lim.SingleProbes, Logger: r.Log, ReloadTargets: lim.ReloadTargets,
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

var (
	_ Runner  = (*AgentRunner)(nil)
	_ InPlace = (*AgentRunner)(nil)
)
