package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/kernel"
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

  ring buffer, bpf_probe_read_user, uprobe cookies, bpf_loop
                required (Linux 5.8, 5.5, 5.15, 5.17): without any of them
                obs-agent refuses to trace, naming what is missing
  uprobe_multi  attaches every probe of a function set in one call (Linux 6.6+);
                without it obs-agent attaches one uprobe per site, which is slower
  uprobe_multi pid filter
                reliable from Linux 6.10; before it the BPF programs filter by
                process themselves

Probing the kernel loads small BPF programs, which needs root (or
CAP_BPF and CAP_PERFMON); without it the features show as unknown.`,
		Example: `  obs-agent version
  sudo obs-agent version`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			writeVersion(cmd.OutOrStdout(), versionString(), kernel.Release(), os.Geteuid() == 0, probeKernelFeatures)
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

// kernelFeature is the outcome of one feature probe.
type kernelFeature = kernel.Feature

// probeKernelFeatures asks the kernel for every feature obs-agent needs or
// can use (internal/kernel).
func probeKernelFeatures() []kernelFeature { return kernel.Probe() }

func writeVersion(w io.Writer, ver, release string, root bool, probe func() []kernelFeature) {
	fmt.Fprintf(w, "obs-agent %s\n", ver)
	fmt.Fprintf(w, "go:     %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "kernel: %s\n", release)
	fs := probe()
	taken := map[string]bool{}
	for _, f := range kernel.Fallbacks(fs, false) {
		taken[f.Name] = true
	}
	for _, f := range fs {
		v := featureVerdict(f, root)
		if f.Missing() && !f.Required && !taken[f.Name] {
			// e.g. the uprobe_multi pid filter on a kernel without
			// uprobe_multi: there is no fallback to describe.
			v = fmt.Sprintf("no: the kernel lacks it (Linux %s+); not used on this kernel", f.Since)
		}
		fmt.Fprintf(w, "  %-24s %s\n", f.Name+":", v)
	}
	if err := kernel.Check(fs); err != nil {
		fmt.Fprintf(w, "tracing: not possible: %v\n", err)
	}
}

func featureVerdict(f kernelFeature, root bool) string {
	switch {
	case f.Err == nil:
		return "yes"
	case f.Missing():
		if f.Required {
			return fmt.Sprintf("no: the kernel lacks it (Linux %s+); obs-agent needs it: it %s", f.Since, f.Use)
		}
		return fmt.Sprintf("no: the kernel lacks it (Linux %s+); instead: %s", f.Since, f.Without)
	case errors.Is(f.Err, unix.EPERM), errors.Is(f.Err, unix.EACCES):
		if !root {
			return "unknown: probing needs root (run 'sudo obs-agent version')"
		}
		return fmt.Sprintf("unknown: the kernel refused the probe even to root (lockdown or a seccomp policy?): %v", f.Err)
	}
	return fmt.Sprintf("unknown: %v", f.Err)
}
