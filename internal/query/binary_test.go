package query

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/symbols"
)

// TestMatchBinary: a path selects its stored processes and, through the
// file's build id, one traced as /proc/PID/exe; a file name selects by the
// path's last element and pulls in the same build; a binary no process ran
// is ErrNoBinary naming what the store holds.
func TestMatchBinary(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	q := New(s)
	if _, err := q.MatchBinary(ctx, "api"); !errors.Is(err, ErrNoBinary) || !strings.Contains(err.Error(), "no traced processes") {
		t.Errorf("empty store: %v, want ErrNoBinary saying the store has none", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	id := symbols.BuildID(self)
	if id == "" {
		t.Fatalf("the test binary %s has no build id", self)
	}
	for _, p := range []store.Process{
		{Session: 1, PID: 10, Binary: "/srv/api", BuildID: "B1", Start: 1},
		{Session: 2, PID: 20, Binary: "/proc/20/exe", BuildID: "B1", Start: 2},
		{Session: 3, PID: 30, Binary: "/proc/30/exe", BuildID: id, Start: 3},
		{Session: 4, PID: 40, Binary: "/usr/bin/other", BuildID: "O", Start: 4},
	} {
		if err := s.BeginProcess(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ arg, want string }{
		{"/srv/api", "{[/srv/api] [B1]}"},
		{"api", "{[/srv/api] [B1]}"},
		{"/srv/../srv/api", "{[/srv/api] [B1]}"},
		{self, fmt.Sprintf("{[%s] [%s]}", self, id)},
		{"other", "{[/usr/bin/other] [O]}"},
	} {
		m, err := q.MatchBinary(ctx, c.arg)
		if err != nil || fmt.Sprint(*m) != c.want {
			t.Errorf("MatchBinary(%s) = %v, %v; want %s", c.arg, m, err, c.want)
		}
	}
	_, err = q.MatchBinary(ctx, "/srv/web")
	if !errors.Is(err, ErrNoBinary) || !strings.Contains(err.Error(), "/srv/api, /usr/bin/other") {
		t.Errorf("an unknown binary: %v; want ErrNoBinary listing the binaries", err)
	}
}
