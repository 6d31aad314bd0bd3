package resources

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
)

func TestSampleSelf(t *testing.T) {
	s, err := NewSampler(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	g := int64(7)
	t0 := time.Now()
	first := s.Sample(t0, &g)
	if first.CPUPercent != nil {
		t.Errorf("first sample has CPU percent %v, want nil", *first.CPUPercent)
	}
	if first.PID != uint32(os.Getpid()) || first.Time != t0.UnixNano() {
		t.Errorf("pid/time = %d/%d, want %d/%d", first.PID, first.Time, os.Getpid(), t0.UnixNano())
	}
	if first.Goroutines == nil || *first.Goroutines != 7 {
		t.Errorf("goroutines not passed through: %v", first.Goroutines)
	}
	// Our own process: every metric is readable.
	for name, ok := range map[string]bool{
		"rss": first.RSSBytes != nil && *first.RSSBytes > 0, "vms": first.VMSBytes != nil && *first.VMSBytes > 0,
		"threads": first.Threads != nil && *first.Threads >= 1, "fds": first.OpenFDs != nil && *first.OpenFDs >= 3,
		"read": first.ReadBytes != nil, "write": first.WriteBytes != nil,
		"vol": first.VolCtxSwitches != nil, "invol": first.InvCtxSwitches != nil,
	} {
		if !ok {
			t.Errorf("metric %s missing or implausible in %+v", name, first)
		}
	}

	// Burn some CPU so the second sample has a positive percentage.
	deadline := time.Now().Add(150 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	second := s.Sample(time.Now(), nil)
	if second.CPUPercent == nil {
		t.Fatal("second sample has no CPU percent")
	}
	if p := *second.CPUPercent; p <= 0 || p > 100*float64(8*1024) {
		t.Errorf("CPU percent %v implausible (loop count %d)", p, x)
	}
	if second.Goroutines != nil {
		t.Errorf("goroutines = %v, want nil", *second.Goroutines)
	}
}

func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func TestSampleChild(t *testing.T) {
	cmd := startSleep(t)
	s, err := NewSampler(int32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	r := s.Sample(time.Now(), nil)
	if r.PID != uint32(cmd.Process.Pid) {
		t.Errorf("pid = %d, want %d", r.PID, cmd.Process.Pid)
	}
	if r.RSSBytes == nil || *r.RSSBytes == 0 || r.Threads == nil || *r.Threads != 1 {
		t.Errorf("sleep sample implausible: rss=%v threads=%v", r.RSSBytes, r.Threads)
	}
	if !s.Running() {
		t.Error("Running() = false for a live child")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if s.Running() {
		t.Error("Running() = true after the child was reaped")
	}
}

func TestDeadPID(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	pid := int32(cmd.Process.Pid) // reaped, so gone (reuse this fast is unlikely)
	if _, err := NewSampler(pid); !errors.Is(err, ErrNoProcess) {
		t.Errorf("NewSampler(dead pid) error = %v, want ErrNoProcess", err)
	}
	err := Run(context.Background(), pid, time.Millisecond, nil, func(record.ResourceSample) {
		t.Error("emit called for a dead pid")
	})
	if !errors.Is(err, ErrNoProcess) {
		t.Errorf("Run(dead pid) error = %v, want ErrNoProcess", err)
	}
}

func TestRunStopsWhenProcessExits(t *testing.T) {
	cmd := startSleep(t)
	var (
		mu      sync.Mutex
		samples []record.ResourceSample
	)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), int32(cmd.Process.Pid), 20*time.Millisecond,
			func() *int64 { n := int64(3); return &n },
			func(r record.ResourceSample) {
				mu.Lock()
				samples = append(samples, r)
				mu.Unlock()
			})
	}()
	time.Sleep(150 * time.Millisecond)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after the process exited, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop after the process exited")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(samples) < 2 {
		t.Fatalf("got %d samples, want at least 2", len(samples))
	}
	if samples[0].CPUPercent != nil || samples[1].CPUPercent == nil {
		t.Errorf("CPU percent: first %v (want nil), second %v (want set)", samples[0].CPUPercent, samples[1].CPUPercent)
	}
	for i, r := range samples {
		if r.Goroutines == nil || *r.Goroutines != 3 {
			t.Errorf("sample %d goroutines = %v, want 3", i, r.Goroutines)
		}
		if r.RSSBytes == nil {
			t.Errorf("sample %d of a live process has no RSS", i)
		}
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := Run(ctx, int32(os.Getpid()), time.Hour, nil, func(record.ResourceSample) {
		n++
		cancel()
	})
	if err != nil || n != 1 {
		t.Errorf("Run = %v after %d samples, want nil after 1", err, n)
	}
}
