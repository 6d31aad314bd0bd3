package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"syscall"
)

// cpuProfileEnv names the developers' switch for a CPU profile of the whole
// process: OBS_AGENT_CPUPROFILE=FILE makes obs-agent write a pprof CPU
// profile of its run to FILE (read it with `go tool pprof`). It exists
// because perf, in the VMs the agent is developed on, attributes about half
// of the samples to interrupt entry, and because the agent's cost per call
// (ring read, decode, queues, sinks) is only seen whole in the real process
// under a real flood (docs/performance.md). It is not a flag: it is not a
// user feature, and the profiler itself costs a little CPU.
const cpuProfileEnv = "OBS_AGENT_CPUPROFILE"

// startCPUProfile starts the CPU profile when cpuProfileEnv is set and
// returns the function that stops it and closes the file (a no-op
// otherwise). A profile that cannot be started is reported on stderr and
// the command runs on without it.
func startCPUProfile(stderr io.Writer) (stop func()) {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return func() {}
	}
	// O_NOFOLLOW: the agent runs as root; the profile never follows a
	// symbolic link planted at its path.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "obs-agent: %s: %v; running without a CPU profile\n", cpuProfileEnv, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		fmt.Fprintf(stderr, "obs-agent: %s: start the CPU profile: %v; running without it\n", cpuProfileEnv, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "obs-agent: %s: %v\n", cpuProfileEnv, err)
		}
	}
}
