package agent

import (
	"bytes"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/obs-agent/obs-agent/internal/selector"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

func TestSkipSummary(t *testing.T) {
	sk := []selector.Skipped{
		{Name: "a", Reason: "bytes at +0x1f do not decode"},
		{Name: "b", Reason: selector.ReasonInlinedOnly},
		{Name: "c", Reason: "bytes at +0x3 do not decode"},
		{Name: "d", Reason: "code at 0x401000-0x401010 is not in an executable segment"},
		{Name: "e", Reason: "bytes at +0x22 do not decode"},
		{Name: "f", Reason: selector.ReasonInlinedOnly},
	}
	want := "bytes at … do not decode: 3; " + selector.ReasonInlinedOnly + ": 2; code at … is not in an executable segment: 1"
	if got := skipSummary(sk); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// TestSkippedOneLine selects a package glob that matches functions that
// cannot be probed: one warning line counts them per reason; --debug
// (the debug level) lists each one.
func TestSkippedOneLine(t *testing.T) {
	bin := testutil.BuildProgram(t, testutil.Build{Program: "calltree"})
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var buf bytes.Buffer
		opts := testOptions(t)
		opts.Include = []string{"main.*", "strconv.*", "fmt.*"}
		opts.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level}))
		s, err := prepare(opts, bin)
		if err != nil {
			t.Fatal(err)
		}
		s.bin.Close()
		n := len(s.sel.Skipped)
		if n < 2 {
			t.Fatalf("the patterns skip %d functions; the test needs several", n)
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		summary, each := 0, 0
		for _, l := range lines {
			switch {
			case strings.Contains(l, fmt.Sprintf("msg=\"%d matched functions cannot be probed\"", n)):
				summary++
				if !regexp.MustCompile(`reasons=".*: \d+`).MatchString(l) || !strings.Contains(l, "obs-agent list --binary") {
					t.Errorf("summary lacks the reasons or where to see the list: %s", l)
				}
			case strings.Contains(l, "msg=\"matched function cannot be probed\""):
				each++
			}
		}
		wantEach := 0
		if level == slog.LevelDebug {
			wantEach = n
		}
		if summary != 1 || each != wantEach {
			t.Errorf("level %v: %d summary lines and %d per-function lines for %d skipped, want 1 and %d:\n%s",
				level, summary, each, n, wantEach, buf.String())
		}
	}
}
