package uprobe

import (
	"fmt"

	"golang.org/x/sys/unix"
)

const (
	// fdsPerSingleProbe: a perf-event uprobe holds a perf event fd and,
	// on kernels with BPF perf links (5.15+), a BPF link fd.
	fdsPerSingleProbe = 2
	// fdHeadroom covers everything else the agent keeps open: the BPF
	// programs and maps, the rings, the store and its journal, /proc files.
	fdHeadroom = 256
)

// ensureFDs makes sure the process may open enough files for sites
// single uprobes. Go raises the soft RLIMIT_NOFILE to the hard limit at
// start, but the hard limit is often 4096 (the kernel's default outside
// systemd), and 5,000 single uprobes need 10,000 descriptors: on Linux 6.1
// the attach failed half way with EMFILE. Root (CAP_SYS_RESOURCE) may raise
// the hard limit, up to fs.nr_open; anyone else gets a clear error before
// anything is attached. uprobe_multi links need one descriptor per link,
// so this is only called for single probes.
func ensureFDs(sites int) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open-file limit: %w", err)
	}
	need := uint64(sites)*fdsPerSingleProbe + fdHeadroom
	if lim.Cur >= need {
		return nil
	}
	want := unix.Rlimit{Cur: need, Max: max(lim.Max, need)}
	err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want)
	if err == nil {
		return nil
	}
	return fmt.Errorf("%d single uprobes need about %d open files, but the limit is %d (hard %d) and could not be raised (%v): "+
		"raise it (ulimit -n %d, or LimitNOFILE= in a systemd unit), select fewer functions, or use a kernel with uprobe_multi (Linux 6.6+)",
		sites, need, lim.Cur, lim.Max, err, need)
}

// singleSites counts the probe sites of cfg (function sites and runtime
// hooks), as attached one perf-event uprobe each.
func singleSites(cfg Config) int {
	n := 0
	for _, f := range cfg.Funcs {
		n += 1 + len(f.Rets)
	}
	rt := cfg.Runtime
	n += 1 + len(rt.Newproc1Rets) + 3 // newproc1 entry and RETs, gopanic, goexit1, copystack
	return n
}
