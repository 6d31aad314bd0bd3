package agent

import (
	"log/slog"

	"github.com/obs-agent/obs-agent/internal/kernel"
)

// checkKernel refuses, before anything is started or attached, a kernel
// that lacks a feature tracing cannot do without, naming the feature and
// the Linux release that brought it. On a kernel that lacks only optional
// features it says once which fallback the session takes (for example one
// perf-event uprobe per site on Linux 6.1), so nobody has to be told to
// pass --single-probes.
func checkKernel(log *slog.Logger, single bool) error {
	fs := kernel.Probe()
	if err := kernel.Check(fs); err != nil {
		return err
	}
	for _, f := range kernel.Fallbacks(fs, single) {
		log.Info("kernel lacks "+f.Name+" (Linux "+f.Since+"+): "+f.Without, "kernel", kernel.Release())
	}
	return nil
}
