// Package daemon owns obs-agent's service mode (`obs-agent daemon`): it
// runs the targets of a config file (internal/config) until it is told to
// stop, and on a reload applies the difference between the running config
// and the new one.
//
// The tracing itself is behind Runner, "trace this target set until ctx is
// done", so the daemon does not depend on how many targets one agent can
// hold. AgentRunner implements it with internal/agent as it is: one target
// per session, and one session per store at a time; it refuses a set it
// cannot run with an error that names the limit.
//
// A reload never leaves the daemon without a valid config: the new file is
// loaded and checked in full (Runner.Check reads the binaries and matches
// the patterns) before anything running is touched, and an invalid file is
// refused with a logged error while the old config keeps running. An
// unchanged target set keeps running untouched; new patterns or sample
// rates, targets removed and targets added are applied in place by a
// Runner that can (InPlace: the running sessions go on, with no probe of a
// kept function down; an added target gets a session of its own). Any
// other change, or one the Runner cannot apply in place, stops the set,
// which detaches its probes and flushes and stores everything its rings
// and queues hold, and only then started with the new config (what that
// means for calls in flight at the switch is in docs/unsupported.md).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/config"
)

// Set is what one Runner.Run traces: the targets and the settings they
// share (the store, the limits, the exporters). The UI is not part of it:
// it only reads the store, and is restarted on its own.
type Set struct {
	Targets []config.Target
	Store   config.Store
	Limits  config.Limits
	Metrics config.Metrics
	OTLP    config.OTLP
}

// SetOf is the target set of a config.
func SetOf(c *config.Config) Set {
	return Set{Targets: c.Targets, Store: c.Store, Limits: c.Limits, Metrics: c.Metrics, OTLP: c.OTLP}
}

// Equal reports whether two sets trace the same way.
func (s Set) Equal(o Set) bool { return reflect.DeepEqual(s, o) }

// Runner traces target sets.
type Runner interface {
	// Check refuses, before anything running is stopped, a set that Run
	// could not start: a limit of the runner, a missing binary, a
	// pattern that matches nothing.
	Check(set Set) error
	// Run traces set until ctx is done and returns once every record is
	// stored and the session rows are ended. It calls ready once, when
	// every probe is live. It may return before ctx is done when its
	// targets are gone (a pid target that exited); an error means the
	// set could not run or the store failed.
	Run(ctx context.Context, set Set, ready func()) error
}

// InPlace is a Runner that can apply some changes to the set it runs
// without stopping it: new patterns and sample rates of the same targets,
// targets removed, and targets added.
type InPlace interface {
	// Apply brings the running set, started by Run as old, to next and
	// returns how long the switch took. An error that wraps
	// agent.ErrNotInPlace means it changed nothing and the set must be
	// restarted to apply next.
	Apply(old, next Set) (time.Duration, error)
}

// samePlace reports whether b differs from a at most in what InPlace may
// change: the targets (their patterns and sample rates, targets left out
// or added), not the settings they share.
func samePlace(a, b Set) bool {
	return reflect.DeepEqual(a.Store, b.Store) && reflect.DeepEqual(a.Limits, b.Limits) &&
		reflect.DeepEqual(a.Metrics, b.Metrics) && reflect.DeepEqual(a.OTLP, b.OTLP)
}

// Daemon runs a config file with a Runner.
type Daemon struct {
	Runner Runner
	Log    *slog.Logger
	// StartUI serves the UI over the store at db on listen until ctx is
	// done; it returns once listening, and wait returns when the server
	// has stopped. Nil: a config with ui.listen is refused.
	StartUI func(ctx context.Context, db string, ui config.UI) (wait func(), err error)
	// Applied, when set, is called each time a config is in force with
	// every probe live: generation 1 for the first, then one more per
	// applied reload (not for a refused one).
	Applied func(generation int)
	// Refused, when set, is called for each reload that was refused.
	Refused func(err error)
}

// running is a target set being traced.
type running struct {
	set    Set
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error // valid once done is closed
}

// stop ends the set, with cause (nil at SIGTERM; agent.ErrReplaced when a
// reload restarts it, which its session rows then give as exit reason).
func (r *running) stop(cause error) error {
	r.cancel(cause)
	<-r.done
	return r.err
}

// uiServer is the UI being served.
type uiServer struct {
	cfg    config.UI
	db     string
	cancel context.CancelFunc
	wait   func()
}

func (u *uiServer) stop() {
	if u != nil {
		u.cancel()
		u.wait()
	}
}

// Serve loads the config at path, runs it, and applies it again at every
// receive on reload, until ctx is done; then it stops everything cleanly.
// An error at the first load or start is returned (nothing is left
// running); later, only a failure of the running set ends Serve with an
// error.
func (d *Daemon) Serve(ctx context.Context, path string, reload <-chan struct{}) error {
	log := d.Log.With("component", "daemon")
	cfg, err := d.load(path)
	if err != nil {
		return err
	}
	ui, err := d.startUI(ctx, nil, cfg)
	if err != nil {
		return err
	}
	defer func() { ui.stop() }()
	cur, err := d.start(ctx, SetOf(cfg))
	if err != nil {
		return err
	}
	gen := 1
	log.Info("config in force", "config", path, "generation", gen, "targets", len(cfg.Targets))
	d.applied(gen)
	for {
		var ended <-chan struct{}
		if cur != nil {
			ended = cur.done
		}
		select {
		case <-ctx.Done():
			if cur != nil {
				if err := cur.stop(nil); err != nil {
					return err
				}
			}
			log.Info("stopped: every record is stored and the sessions are ended")
			return nil
		case <-ended:
			if cur.err != nil {
				return fmt.Errorf("tracing failed: %w", cur.err)
			}
			log.Info("every target of the config has ended; waiting for a reload (SIGHUP) or SIGTERM")
			cur = nil
		case <-reload:
			next, err := d.load(path)
			if err != nil {
				log.Error("config reload refused; the running config stays in force", "config", path, "err", err)
				d.refused(err)
				continue
			}
			var applied bool
			if cur, applied, err = d.switchSet(ctx, cur, SetOf(next)); err != nil {
				return err
			}
			if !applied {
				d.refused(errors.New("the new targets could not start"))
				continue
			}
			if ui, err = d.startUI(ctx, ui, next); err != nil {
				log.Error("ui: the new ui settings could not be applied; the UI is off", "err", err)
				ui = nil
			}
			cfg = next
			gen++
			log.Info("config in force", "config", path, "generation", gen, "targets", len(cfg.Targets))
			d.applied(gen)
		}
	}
}

func (d *Daemon) applied(gen int) {
	if d.Applied != nil {
		d.Applied(gen)
	}
}

func (d *Daemon) refused(err error) {
	if d.Refused != nil {
		d.Refused(err)
	}
}

// load reads and checks the config, the runner's check included.
func (d *Daemon) load(path string) (*config.Config, error) {
	c, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if c.UI.Listen != "" && d.StartUI == nil {
		return nil, fmt.Errorf("config %s: ui.listen: this build serves no UI", path)
	}
	if err := d.Runner.Check(SetOf(c)); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// switchSet applies a reloaded set: an unchanged one keeps running; one
// whose targets changed (patterns, sample rates, targets removed or added)
// is changed in place when the runner can (InPlace); any other change, or
// one the runner refuses with agent.ErrNotInPlace, stops the running set
// (everything flushed and stored), then starts the new one. Should the new one fail to start although it passed its
// check (its binary was replaced meanwhile, say), the old set is started
// again, so that a reload never leaves nothing traced when it can help it.
func (d *Daemon) switchSet(ctx context.Context, cur *running, next Set) (r *running, applied bool, err error) {
	log := d.Log.With("component", "daemon")
	if cur != nil && cur.set.Equal(next) {
		log.Info("targets unchanged: they keep running")
		return cur, true, nil
	}
	if ip, ok := d.Runner.(InPlace); ok && cur != nil && samePlace(cur.set, next) {
		took, err := ip.Apply(cur.set, next)
		if err == nil {
			// The same sessions go on: no probe of a kept function was
			// down, and nothing was stopped.
			log.Info("targets updated in place", "switch_took", took.Round(time.Microsecond))
			cur.set = next
			return cur, true, nil
		}
		log.Info("the change cannot be applied in place; restarting the targets", "reason", err)
	}
	begin := time.Now()
	var old Set
	hadOld := cur != nil
	if hadOld {
		old = cur.set
		if err := cur.stop(agent.ErrReplaced); err != nil {
			return nil, false, fmt.Errorf("tracing failed: %w", err)
		}
	}
	stopped := time.Since(begin)
	r, err = d.start(ctx, next)
	if err == nil {
		// The window in which no probe of this daemon was live: from the
		// old set's detach to the new set's attach (docs/unsupported.md).
		log.Info("targets switched", "stop_took", stopped.Round(time.Millisecond), "untraced_for_at_most", time.Since(begin).Round(time.Millisecond))
		return r, true, nil
	}
	log.Error("config reload refused: the new targets could not start; starting the previous ones again", "err", err)
	if !hadOld {
		return nil, false, nil
	}
	r, rerr := d.start(ctx, old)
	if rerr != nil {
		log.Error("the previous targets could not start again either; nothing is traced until the next reload", "err", rerr)
		return nil, false, nil
	}
	return r, false, nil
}

// start runs set and waits until every probe is live. A set that ends
// before that failed to start.
func (d *Daemon) start(ctx context.Context, set Set) (*running, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	r := &running{set: set, cancel: cancel, done: make(chan struct{})}
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(r.done)
		r.err = d.Runner.Run(rctx, set, func() { once.Do(func() { close(ready) }) })
	}()
	select {
	case <-ready:
		return r, nil
	case <-r.done:
		cancel(nil)
		if r.err == nil {
			r.err = errors.New("the targets ended before every probe was live")
		}
		return nil, r.err
	}
}

// startUI brings the UI to what cfg says: kept when unchanged, else the
// old server is stopped and the new one started.
func (d *Daemon) startUI(ctx context.Context, cur *uiServer, cfg *config.Config) (*uiServer, error) {
	if cur != nil && cur.cfg == cfg.UI && cur.db == cfg.Store.DB {
		return cur, nil
	}
	cur.stop()
	if cfg.UI.Listen == "" {
		return nil, nil
	}
	uctx, cancel := context.WithCancel(ctx)
	wait, err := d.StartUI(uctx, cfg.Store.DB, cfg.UI)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("ui.listen %s: %w", cfg.UI.Listen, err)
	}
	return &uiServer{cfg: cfg.UI, db: cfg.Store.DB, cancel: cancel, wait: wait}, nil
}
