package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obs-agent/obs-agent/internal/record"
	"github.com/obs-agent/obs-agent/internal/store"
)

// TestUICommand: the first line of stdout is the URL with the token; the
// token is required; the server ends with the context.
func TestUICommand(t *testing.T) {
	db := filepath.Join(t.TempDir(), "obs.db")
	s, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginSession(record.Session{PID: 7, Binary: "/bin/x", Start: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"ui", "--db", db, "--listen", "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	url := strings.TrimSpace(line)
	base, token, ok := strings.Cut(url, "/?token=")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") || len(token) < 32 {
		t.Fatalf("first line %q: want http://127.0.0.1:PORT/?token=<random>", line)
	}
	get := func(path, tok string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/api/sessions", ""); c != http.StatusUnauthorized {
		t.Errorf("without the token: %d", c)
	}
	if c := get("/api/sessions", "x"+token[1:]); c != http.StatusUnauthorized {
		t.Errorf("with a wrong token: %d", c)
	}
	if c := get("/api/sessions", token); c != http.StatusOK {
		t.Errorf("with the token: %d", c)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ui after cancel: %v", err)
	}
}

func TestUIFlags(t *testing.T) {
	cases := map[string][]string{
		"--allow-remote":       {"ui", "--listen", "0.0.0.0:7070"},
		"0..65535":             {"ui", "--listen", "127.0.0.1:99999"},
		"IP address":           {"ui", "--listen", "example.com:7070"},
		"obs-agent ui --allow": {"run", "--ui", "10.0.0.1:7070", "-f", "main.*", "--", "/bin/true"},
		"no store at":          {"ui", "--db", "/nonexistent/obs.db"},
	}
	for want, args := range cases {
		_, err := runCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: %v, want an error saying %q", args, err, want)
		}
	}
}
