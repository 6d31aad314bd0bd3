package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/kernel"
)

func TestVersionOutput(t *testing.T) {
	probe := func() []kernelFeature {
		return []kernelFeature{
			{Name: "uprobe_multi", Since: "6.6", Without: "one perf-event uprobe per site", Err: fmt.Errorf("probe: %w", ebpf.ErrNotSupported)},
			{Name: "ring buffer", Since: "5.8", Required: true},
			{Name: kernel.UprobeMultiPIDFilter, Since: "6.10", Without: "BPF filters by tgid", Err: ebpf.ErrNotSupported},
		}
	}
	var b bytes.Buffer
	writeVersion(&b, "v1.2.3", "6.8.0-45-generic", true, probe)
	out := b.String()
	for _, want := range []string{
		"obs-agent v1.2.3\n",
		"go:     " + runtime.Version(),
		"kernel: 6.8.0-45-generic\n",
		"uprobe_multi:",
		"no: the kernel lacks it (Linux 6.6+); instead: one perf-event uprobe per site\n",
		"ring buffer:",
		" yes\n",
		"uprobe_multi pid filter: no: the kernel lacks it (Linux 6.10+); not used on this kernel\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "tracing: not possible") {
		t.Errorf("an optional feature missing must not make tracing impossible:\n%s", out)
	}
}

// TestVersionRequiredMissing: a kernel without a required feature is
// reported as unable to trace, naming the feature and the minimum kernel.
func TestVersionRequiredMissing(t *testing.T) {
	probe := func() []kernelFeature {
		return []kernelFeature{{Name: "bpf_loop", Since: "5.17", Required: true, Use: "closes the frames a panic unwound",
			Err: fmt.Errorf("probe: %w", ebpf.ErrNotSupported)}}
	}
	var b bytes.Buffer
	writeVersion(&b, "v1", "5.15.0-100-generic", true, probe)
	out := b.String()
	for _, want := range []string{
		"bpf_loop:",
		"no: the kernel lacks it (Linux 5.17+); obs-agent needs it: it closes the frames a panic unwound\n",
		"tracing: not possible: kernel too old for obs-agent:",
		"needs Linux 5.17 or later",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestFeatureVerdict(t *testing.T) {
	tests := []struct {
		err  error
		root bool
		want string
	}{
		{nil, false, "yes"},
		{ebpf.ErrNotSupported, true, "no: the kernel lacks it"},
		{fmt.Errorf("load: %w", unix.EPERM), false, "unknown: probing needs root (run 'sudo obs-agent version')"},
		{fmt.Errorf("load: %w", unix.EPERM), true, "unknown: the kernel refused the probe even to root"},
		{errors.New("boom"), true, "unknown: boom"},
	}
	for _, tt := range tests {
		if got := featureVerdict(kernelFeature{Name: "ring buffer", Since: "5.8", Required: true, Err: tt.err}, tt.root); !strings.HasPrefix(got, tt.want) {
			t.Errorf("featureVerdict(%v, root=%v) = %q, want prefix %q", tt.err, tt.root, got, tt.want)
		}
	}
}

func TestVersionString(t *testing.T) {
	old := version
	defer func() { version = old }()
	version = "v9.9.9"
	if got := versionString(); !strings.HasPrefix(got, "v9.9.9") {
		t.Errorf("versionString() = %q with -X version v9.9.9", got)
	}
	version = ""
	if got := versionString(); got == "" {
		t.Error("empty version without -X")
	}
}

// TestVersionCommand runs the real command; feature lines are yes, no or
// unknown depending on the kernel and privileges, but always present.
func TestVersionCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"obs-agent ", "kernel: ", "uprobe_multi: ", "ring buffer: ", "bpf_loop: ", "uprobe_multi pid filter: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
