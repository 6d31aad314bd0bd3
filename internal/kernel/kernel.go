// Package kernel owns what obs-agent knows about the running kernel: its
// release, and which of the BPF features the tracer uses it has. For each
// feature it records the first Linux release that brought it and what is
// lost without it, so that a kernel too old to trace is refused at start
// with a message naming what is missing, a kernel that lacks only an
// optional feature is traced by the fallback path, and `obs-agent version`
// lists what was found.
//
// Features are probed by asking the kernel (cilium/ebpf's feature probes
// load tiny programs and maps), not by comparing version numbers, because
// distributions backport BPF features. The one exception is the
// uprobe_multi pid filter bug, which no probe can see without running a
// multi-threaded target; it is judged by release (see MultiPIDFilterWorks).
package kernel

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// ErrUnsupported means the kernel lacks a feature obs-agent cannot trace
// without.
var ErrUnsupported = errors.New("kernel too old for obs-agent")

// MinRelease is the oldest Linux release that has every required feature
// (bpf_loop is the newest of them).
const MinRelease = "5.17"

// Feature is one kernel capability and whether the running kernel has it.
type Feature struct {
	Name     string // as listed by `obs-agent version`
	Since    string // first Linux release that has it
	Required bool   // obs-agent refuses to trace without it
	Use      string // what obs-agent uses it for
	Without  string // what changes on a kernel without it (optional features)
	// Err is nil when the kernel has the feature and wraps
	// ebpf.ErrNotSupported when it does not; any other error means the
	// probe was inconclusive (typically: not root).
	Err error
}

// Missing reports whether the kernel conclusively lacks the feature.
func (f Feature) Missing() bool { return errors.Is(f.Err, ebpf.ErrNotSupported) }

// probe pairs a feature with the check that asks the running kernel for
// it. The tests run these checks for real, on the host and in the guests
// booted by scripts/test-kernel.sh.
type probe struct {
	Feature
	check func() error
}

// Names of the optional features, for callers that branch on them.
const (
	UprobeMulti          = "uprobe_multi"
	UprobeMultiPIDFilter = "uprobe_multi pid filter"
)

var probes = []probe{
	{Feature{Name: "ring buffer", Since: "5.8", Required: true, Use: "carries call records to the agent"},
		func() error { return features.HaveMapType(ebpf.RingBuf) }},
	{Feature{Name: "bpf_probe_read_user", Since: "5.5", Required: true, Use: "reads goroutine ids, error values and panic values"},
		func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnProbeReadUser) }},
	{Feature{Name: "uprobe cookies", Since: "5.15", Required: true, Use: "tells each probe site which function it belongs to (bpf_get_attach_cookie)"},
		func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetAttachCookie) }},
	{Feature{Name: "bpf_loop", Since: "5.17", Required: true, Use: "closes the frames a panic unwound"},
		func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnLoop) }},
	{Feature{Name: UprobeMulti, Since: "6.6", Use: "attaches and detaches every site of a program in one system call",
		Without: "one perf-event uprobe per site: attaching is slower and detaching costs a kernel grace period per site"},
		features.HaveBPFLinkUprobeMulti},
	{Feature{Name: UprobeMultiPIDFilter, Since: "6.10", Use: "keeps other processes of the same binary from trapping",
		Without: "uprobe_multi links probe every process of the binary and the BPF programs keep only the target's calls; other processes pay the trap cost"},
		func() error {
			if !MultiPIDFilterWorks() {
				return fmt.Errorf("%w: before Linux 6.10 the filter admits only the thread whose id is the pid", ebpf.ErrNotSupported)
			}
			return nil
		}},
}

// Probe checks every feature on the running kernel. Probing loads small
// BPF programs, which needs root or CAP_BPF; without it the results are
// inconclusive errors, not ErrNotSupported. cilium/ebpf caches the
// outcomes, so calling Probe again is cheap.
func Probe() []Feature {
	// Kernels before 5.11 charge BPF objects to RLIMIT_MEMLOCK; without
	// this the probes would fail there for the wrong reason.
	_ = rlimit.RemoveMemlock()
	out := make([]Feature, len(probes))
	for i, p := range probes {
		out[i] = p.Feature
		out[i].Err = p.check()
	}
	return out
}

// Check refuses a kernel that conclusively lacks a required feature,
// naming each missing feature, its first release and what it is for.
// Inconclusive probes pass: loading the programs then fails with the
// precise reason (for example a permission error).
func Check(fs []Feature) error {
	var missing []string
	for _, f := range fs {
		if f.Required && f.Missing() {
			missing = append(missing, fmt.Sprintf("%s (Linux %s+, %s)", f.Name, f.Since, f.Use))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: kernel %s lacks %s; obs-agent needs Linux %s or later", ErrUnsupported, Release(),
		strings.Join(missing, ", "), MinRelease)
}

// Fallbacks returns the optional features the kernel conclusively lacks
// and that change how a session attaches: each is a path taken in place of
// the better one, for the caller to report once. The pid filter does not
// matter when uprobe_multi itself is missing (or single probes were asked
// for): perf-event uprobes filter by pid correctly on every kernel.
func Fallbacks(fs []Feature, single bool) []Feature {
	var out []Feature
	noMulti := single
	for _, f := range fs {
		if f.Name == UprobeMulti && f.Missing() {
			noMulti = true
		}
	}
	for _, f := range fs {
		switch {
		case f.Required || !f.Missing():
		case noMulti && (f.Name == UprobeMulti || f.Name == UprobeMultiPIDFilter):
			if f.Name == UprobeMulti && !single {
				out = append(out, f)
			}
		default:
			out = append(out, f)
		}
	}
	return out
}

// MultiPIDFilterWorks reports whether the kernel's uprobe_multi pid filter
// admits every thread of the process: before Linux 6.10 (commit
// 46ba0e49b642) it admitted only the thread whose id equals the pid, so
// calls on a Go program's other threads would be missed. A kernel whose
// release cannot be read is assumed to have the bug, which costs only
// speed: the BPF programs filter by tgid themselves.
func MultiPIDFilterWorks() bool { return AtLeast(Release(), "6.10") }

// Release is the running kernel's release (uname -r), or "unknown".
func Release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// parseRelease reads the major and minor version from a release string
// such as "6.1.0-57-amd64" or "6.12.117+deb12-arm64".
func parseRelease(r string) (major, minor int, ok bool) {
	n, _ := fmt.Sscanf(r, "%d.%d", &major, &minor)
	return major, minor, n == 2
}

// AtLeast reports whether release r is version v ("6.6") or newer; an
// unreadable release is not.
func AtLeast(r, v string) bool {
	rmaj, rmin, ok := parseRelease(r)
	vmaj, vmin, vok := parseRelease(v)
	if !ok || !vok {
		return false
	}
	return rmaj > vmaj || (rmaj == vmaj && rmin >= vmin)
}
