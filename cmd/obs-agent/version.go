package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3". When
// empty, the module version from the build info is used.
var version = ""

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the obs-agent version and the kernel features it can use",
		Long: `Print the obs-agent version, the Go toolchain that built it, the running
kernel, and whether the kernel has the BPF features obs-agent uses:

  uprobe_multi  attaches every probe of a function set in one call (Linux 6.6+);
                without it obs-agent attaches one uprobe per site, which is slower
  ring buffer   the BPF ring buffer that carries call records (Linux 5.8+)

Probing the kernel loads small BPF programs, which needs root (or
CAP_BPF and CAP_PERFMON); without it the features show as unknown.`,
		Example: `  obs-agent version
  sudo obs-agent version`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			writeVersion(cmd.OutOrStdout(), versionString(), kernelRelease(), os.Geteuid() == 0, probeKernelFeatures)
			return nil
		},
	}
}

// versionString is the -X version, else the module version, with the VCS
// revision when the build recorded one.
func versionString() string {
	v := version
	info, ok := debug.ReadBuildInfo()
	if v == "" {
		v = "(devel)"
		if ok && info.Main.Version != "" {
			v = info.Main.Version
		}
	}
	if ok {
		rev, dirty := "", false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			v += " (" + rev + ")"
		}
	}
	return v
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelFeature is the outcome of one feature probe.
type kernelFeature struct {
	name string
	err  error // nil: supported
}

// probeKernelFeatures asks the kernel, through cilium/ebpf's feature probes,
// for what obs-agent uses.
func probeKernelFeatures() []kernelFeature {
	// Kernels before 5.11 charge BPF objects to RLIMIT_MEMLOCK.
	_ = rlimit.RemoveMemlock()
	return []kernelFeature{
		{"uprobe_multi", features.HaveBPFLinkUprobeMulti()},
		{"ring buffer", features.HaveMapType(ebpf.RingBuf)},
	}
}

func writeVersion(w io.Writer, ver, kernel string, root bool, probe func() []kernelFeature) {
	fmt.Fprintf(w, "obs-agent %s\n", ver)
	fmt.Fprintf(w, "go:     %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "kernel: %s\n", kernel)
	for _, f := range probe() {
		fmt.Fprintf(w, "  %-13s %s\n", f.name+":", featureVerdict(f, root))
	}
}

func featureVerdict(f kernelFeature, root bool) string {
	switch {
	case f.err == nil:
		return "yes"
	case errors.Is(f.err, ebpf.ErrNotSupported):
		what := "the kernel lacks it"
		if f.name == "uprobe_multi" {
			what += " (needs Linux 6.6+); probes are attached one at a time"
		}
		return "no: " + what
	case errors.Is(f.err, unix.EPERM), errors.Is(f.err, unix.EACCES):
		if !root {
			return "unknown: probing needs root (run 'sudo obs-agent version')"
		}
		return fmt.Sprintf("unknown: the kernel refused the probe even to root (lockdown or a seccomp policy?): %v", f.err)
	}
	return fmt.Sprintf("unknown: %v", f.err)
}
