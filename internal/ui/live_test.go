package ui

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

// stream opens /api/events and returns a function that reads the next
// event's name ("" for a comment block), failing after timeout.
func stream(t *testing.T, ctx context.Context, base string) func(timeout time.Duration) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("/api/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	blocks := make(chan string, 16)
	go func() {
		defer close(blocks)
		sc := bufio.NewScanner(resp.Body)
		var b strings.Builder
		for sc.Scan() {
			if sc.Text() == "" {
				blocks <- b.String()
				b.Reset()
				continue
			}
			b.WriteString(sc.Text() + "\n")
		}
	}()
	return func(timeout time.Duration) string {
		t.Helper()
		select {
		case b, ok := <-blocks:
			if !ok {
				t.Fatal("the event stream ended")
			}
			for _, l := range strings.Split(b, "\n") {
				if ev, ok := strings.CutPrefix(l, "event: "); ok {
					return ev
				}
			}
			return ""
		case <-time.After(timeout):
			t.Fatalf("no event within %v", timeout)
			return ""
		}
	}
}

// nextChange skips comments and returns how long the change took.
func nextChange(t *testing.T, next func(time.Duration) string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if ev := next(10 * time.Second); ev == "change" {
			return time.Since(start)
		} else if ev != "" {
			t.Fatalf("event %q, want change", ev)
		}
	}
}

// TestEvents: the event stream says "change" after each batch a writer
// commits, also when the store did not exist yet when the page opened it
// (run --ui starts before the agent creates the store).
func TestEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.db")
	ts := newServer(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next := stream(t, ctx, ts.URL)
	if ev := next(5 * time.Second); ev != "" {
		t.Fatalf("first block is %q, want the opening comment", ev)
	}
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sid, err := s.BeginSession(record.Session{PID: 1, Binary: "/x", Start: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	nextChange(t, next) // the store appeared
	for i := range 3 {
		start := time.Now()
		if err := s.WriteCalls([]record.Call{{ID: sid<<40 | uint64(i+1), PID: 1, GoID: 1, Function: "main.f", Start: time.Now().UnixNano()}}); err != nil {
			t.Fatal(err)
		}
		// A change may already be pending from the session's writes;
		// then the next one is this batch's.
		nextChange(t, next)
		t.Logf("batch %d: change event %v after the commit", i, time.Since(start).Round(time.Millisecond))
	}
}

// TestEventsEndOnShutdown: an open event stream does not hold up the
// server's shutdown.
func TestEventsEndOnShutdown(t *testing.T) {
	f := newFixture(t)
	s, err := New(Options{DB: f.path, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, s, ln) }()
	next := stream(t, context.Background(), "http://"+ln.Addr().String())
	next(5 * time.Second)
	start := time.Now()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v after %v (the stream held up the shutdown)", err, time.Since(start))
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("shutdown took %v", d)
	}
}

// TestLatestCalls: order=newest returns the newest calls first, the same
// calls as the oldest-first list reversed.
func TestLatestCalls(t *testing.T) {
	f := newFixture(t)
	ts := newServer(t, f.path)
	_, all := get(t, ts, "/api/calls?limit=0", true)
	_, newest := get(t, ts, "/api/calls?order=newest&limit=3", true)
	a, n := decode(t, all).([]any), decode(t, newest).([]any)
	if len(a) != 4 || len(n) != 3 {
		t.Fatalf("%d calls, %d newest; want 4 and 3", len(a), len(n))
	}
	for i := range n {
		if fmt.Sprint(n[i]) != fmt.Sprint(a[len(a)-1-i]) {
			t.Errorf("newest[%d] = %v, want %v", i, n[i], a[len(a)-1-i])
		}
	}
}
