package agent

import (
	"os/exec"
	"testing"
	"time"
)

// TestProcessCloseStopsWatch: a session that ends before its target (a
// failed attach, --duration, Ctrl-C) closes the process; the goroutine
// watching its pidfd must return then, not when the target exits, and
// must not report an exit that did not happen. Then, once the target
// exits, a new watch sees it.
func TestProcessCloseStopsWatch(t *testing.T) {
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	p, err := openProcess(sleeper.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	select {
	case <-p.watched:
	case <-time.After(time.Minute): // a failure bound, not a wait for a result
		t.Fatal("watch still waits on the pidfd of a running process after Close")
	}
	select {
	case <-p.Exited():
		t.Fatal("Close reported the process as exited while it runs")
	default:
	}

	q, err := openProcess(sleeper.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	sleeper.Process.Kill()
	sleeper.Wait()
	select {
	case <-q.Exited():
	case <-time.After(time.Minute):
		t.Fatal("the exit of the process was not seen")
	}
}
