package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/obs-agent/obs-agent/internal/config"
)

// recordingRunner stands in for the agent to test the reload logic alone
// (the probes are tested through the real daemon in cmd/obs-agent): it
// records which pattern sets were started and stopped. A pattern
// "main.unchecked" fails Check; "main.wontstart" passes Check but fails
// Run before ready.
type recordingRunner struct {
	mu     sync.Mutex
	events []string
}

func (r *recordingRunner) log(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recordingRunner) Events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recordingRunner) Check(set Set) error {
	if slices.Contains(set.Targets[0].Include, "main.unchecked") {
		return errors.New("pattern main.unchecked matches no function")
	}
	return nil
}

func (r *recordingRunner) Run(ctx context.Context, set Set, ready func()) error {
	name := strings.Join(set.Targets[0].Include, "+")
	if slices.Contains(set.Targets[0].Include, "main.wontstart") {
		r.log("fail " + name)
		return errors.New("binary replaced")
	}
	r.log("start " + name)
	ready()
	<-ctx.Done()
	r.log("stop " + name)
	return nil
}

// TestReload drives Serve through every kind of reload and checks what
// was started and stopped, in order.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	write := func(include, extra string) {
		t.Helper()
		body := "targets: [{exe: /bin/x, include: [" + include + "]}]\nstore: {db: " + filepath.Join(dir, "obs.db") + "}\n" + extra
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := &recordingRunner{}
	applied := make(chan int)
	refused := make(chan error)
	d := &Daemon{Runner: r, Log: slog.New(slog.DiscardHandler),
		Applied: func(g int) { applied <- g }, Refused: func(err error) { refused <- err }}
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{})
	write("main.a", "")
	served := make(chan error)
	go func() { served <- d.Serve(ctx, cfg, reload) }()
	if g := <-applied; g != 1 {
		t.Fatalf("generation %d, want 1", g)
	}
	step := func(include, extra string) {
		write(include, extra)
		reload <- struct{}{}
	}

	step("main.a", "# only a comment changed\n") // unchanged: kept
	if g := <-applied; g != 2 {
		t.Fatalf("generation %d, want 2", g)
	}
	step("main.a, main.b", "") // changed: switched
	<-applied
	step("main.a", "limits: {memory_mib: 1}\n") // invalid file: refused
	if err := <-refused; !strings.Contains(err.Error(), "limits.memory_mib 1") {
		t.Errorf("refusal: %v", err)
	}
	step("main.unchecked", "") // the runner's check refuses
	if err := <-refused; !strings.Contains(err.Error(), "main.unchecked") {
		t.Errorf("refusal: %v", err)
	}
	step("main.wontstart", "") // fails to start: the old set comes back
	<-refused
	step("main.a, main.b", "# same set as running\n")
	if g := <-applied; g != 4 {
		t.Fatalf("generation %d, want 4 (refused reloads are no generation)", g)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	want := []string{
		"start main.a",
		"stop main.a", "start main.a+main.b",
		"stop main.a+main.b", "fail main.wontstart", "start main.a+main.b",
		"stop main.a+main.b",
	}
	if got := r.Events(); !slices.Equal(got, want) {
		t.Errorf("runner events:\n got %q\nwant %q", got, want)
	}
}

// TestStartFails: a config the runner cannot start fails Serve at once,
// with nothing left running.
func TestStartFails(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("targets: [{exe: /bin/x, include: [main.wontstart]}]\nstore: {db: /x.db}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &recordingRunner{}
	d := &Daemon{Runner: r, Log: slog.New(slog.DiscardHandler)}
	err := d.Serve(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "binary replaced") {
		t.Fatalf("Serve: %v", err)
	}
}

// TestAgentRunnerLimits: what the agent cannot run is refused by Check
// with the key named, before anything starts.
func TestAgentRunnerLimits(t *testing.T) {
	r := &AgentRunner{Log: slog.New(slog.DiscardHandler)}
	dir := t.TempDir()
	self, err := os.Executable() // a Go program with a main.main
	if err != nil {
		t.Fatal(err)
	}
	missing := Set{Targets: []config.Target{{Exe: self, Include: []string{"main.main"}}, {Exe: filepath.Join(dir, "none"), Include: []string{"main.*"}}}}
	if err := r.Check(missing); err == nil || !strings.Contains(err.Error(), "targets[1].exe") {
		t.Errorf("a missing second exe: %v", err)
	}
	cg := Set{Targets: []config.Target{{Cgroup: filepath.Join(dir, "nocgroup"), Include: []string{"main.*"}}}}
	if err := r.Check(cg); err == nil || !strings.Contains(err.Error(), "targets[0].cgroup") {
		t.Errorf("a cgroup that is not there: %v", err)
	}
}
