package kernel

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

func TestAtLeast(t *testing.T) {
	for _, tt := range []struct {
		r, v string
		want bool
	}{
		{"6.1.0-57-amd64", "6.6", false},
		{"6.12.117+deb12-arm64", "6.10", true},
		{"6.10.0", "6.10", true},
		{"6.9.12-generic", "6.10", false},
		{"5.17.0", "5.17", true},
		{"5.4.0-200-generic", "5.17", false},
		{"7.0.1", "6.10", true},
		{"unknown", "5.8", false},
	} {
		if got := AtLeast(tt.r, tt.v); got != tt.want {
			t.Errorf("AtLeast(%q, %q) = %v, want %v", tt.r, tt.v, got, tt.want)
		}
	}
}

// TestCheck: a required feature the kernel conclusively lacks is refused
// with its name, first release and the overall minimum; optional features
// and inconclusive probes are not.
func TestCheck(t *testing.T) {
	absent := fmt.Errorf("probe: %w", ebpf.ErrNotSupported)
	fs := []Feature{
		{Name: "ring buffer", Since: "5.8", Required: true, Use: "carries call records"},
		{Name: "bpf_loop", Since: "5.17", Required: true, Use: "closes panicked frames", Err: absent},
		{Name: "uprobe cookies", Since: "5.15", Required: true, Use: "site ids", Err: fmt.Errorf("load: %w", unix.EPERM)},
		{Name: "uprobe_multi", Since: "6.6", Err: absent},
	}
	err := Check(fs)
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Check = %v, want ErrUnsupported", err)
	}
	msg := err.Error()
	for _, want := range []string{"bpf_loop (Linux 5.17+, closes panicked frames)", "needs Linux " + MinRelease + " or later"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	for _, not := range []string{"uprobe_multi", "uprobe cookies", "ring buffer"} {
		if strings.Contains(msg, not) {
			t.Errorf("message names %q, which is optional, inconclusive or present: %s", not, msg)
		}
	}
	if err := Check(fs[2:]); err != nil {
		t.Errorf("only an inconclusive required probe and a missing optional feature: %v", err)
	}
}

// TestProbeMatchesRelease asks the running kernel (the host, or a guest
// booted by scripts/test-kernel.sh) for every feature: a kernel at or past
// a feature's first release must have it, one before it must lack it
// unless the distribution backported it (logged, as that is legitimate),
// and the kernel must pass Check, since every kernel we test is at least
// MinRelease.
func TestProbeMatchesRelease(t *testing.T) {
	testutil.RequireRoot(t)
	rel := Release()
	fs := Probe()
	if len(fs) != len(probes) {
		t.Fatalf("Probe returned %d features, want %d", len(fs), len(probes))
	}
	for _, f := range fs {
		if f.Err != nil && !f.Missing() {
			t.Errorf("%s: inconclusive probe as root: %v", f.Name, f.Err)
			continue
		}
		switch at := AtLeast(rel, f.Since); {
		case at && f.Missing():
			t.Errorf("kernel %s is at least %s but lacks %s: %v", rel, f.Since, f.Name, f.Err)
		case !at && !f.Missing():
			t.Logf("kernel %s is older than %s but has %s (backported)", rel, f.Since, f.Name)
		}
		t.Logf("%-24s since %-5s present %v", f.Name, f.Since, !f.Missing())
	}
	if err := Check(fs); err != nil {
		t.Fatalf("kernel %s refused: %v", rel, err)
	}
}

// TestFallbacks: the paths a session takes instead of the better one,
// reported once each: without uprobe_multi only that (the pid filter is
// moot), with --single-probes nothing about uprobe_multi at all, and on a
// 6.6-6.9 kernel the pid filter.
func TestFallbacks(t *testing.T) {
	absent := fmt.Errorf("probe: %w", ebpf.ErrNotSupported)
	feats := func(multi, filter error) []Feature {
		return []Feature{
			{Name: "bpf_loop", Since: "5.17", Required: true, Err: absent},
			{Name: UprobeMulti, Since: "6.6", Err: multi},
			{Name: UprobeMultiPIDFilter, Since: "6.10", Err: filter},
		}
	}
	names := func(fs []Feature) string {
		var n []string
		for _, f := range fs {
			n = append(n, f.Name)
		}
		return strings.Join(n, ",")
	}
	for _, tt := range []struct {
		name          string
		multi, filter error
		single        bool
		want          string
	}{
		{"6.1", absent, absent, false, UprobeMulti},
		{"6.1 single", absent, absent, true, ""},
		{"6.8", nil, absent, false, UprobeMultiPIDFilter},
		{"6.8 single", nil, absent, true, ""},
		{"6.12", nil, nil, false, ""},
		{"inconclusive", fmt.Errorf("load: %w", unix.EPERM), nil, false, ""},
	} {
		if got := names(Fallbacks(feats(tt.multi, tt.filter), tt.single)); got != tt.want {
			t.Errorf("%s: Fallbacks = %q, want %q", tt.name, got, tt.want)
		}
	}
}
