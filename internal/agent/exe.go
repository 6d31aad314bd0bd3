package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// AttachExe traces every process whose executable is the file at path,
// those running now and those that start from it later, until ctx is done
// or opts.Duration passes; processes come and go without ending the
// session.
//
// The probes are attached to the file (its inode), with no pid filter: the
// kernel arms every mapping of that inode, including the mappings a later
// execve makes before the new process runs its first instruction, so a
// process that lives a few milliseconds is traced as fully as a long one,
// and no process of another binary pays a trap. The binary is analysed
// once for the whole session. The BPF state (goroutines, frames) is keyed
// by (tgid, g), so the processes never share state; the follower
// (exefollow.go) tells which processes ran, closes what each left open
// when it exits, and stores one row per process.
func AttachExe(ctx context.Context, path string, opts Options) (*Result, error) {
	abs, st, err := checkExe(path)
	if err != nil {
		return nil, err
	}
	if err := refuseSelf(0, abs); err != nil {
		return nil, err
	}
	s, err := prepare(opts, abs)
	if err != nil {
		return nil, err
	}
	defer s.bin.Close()
	s.follow = newFollower(s, abs, uint64(st.Dev), st.Ino, buildID(abs))
	t := &fileTarget{path: abs, done: make(chan struct{})}
	return s.run(ctx, t)
}

// CheckExe refuses an --exe path that is no regular file, before
// anything starts.
func CheckExe(path string) error {
	_, _, err := checkExe(path)
	return err
}

func checkExe(path string) (string, unix.Stat_t, error) {
	var st unix.Stat_t
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", st, fmt.Errorf("--exe %s: %w", path, err)
	}
	if err := unix.Stat(abs, &st); err != nil {
		return "", st, fmt.Errorf("--exe %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", st, fmt.Errorf("--exe %s is not a regular file: give the path of a Go program's executable", path)
	}
	return abs, st, nil
}

// fileTarget is the target of AttachExe: a file, not a process. It never
// exits; the session ends at Ctrl-C or --duration.
type fileTarget struct {
	path string
	done chan struct{}
}

func (t *fileTarget) PID() int                       { return 0 }
func (t *fileTarget) ExePath() string                { return t.path }
func (t *fileTarget) Exited() <-chan struct{}        { return t.done }
func (t *fileTarget) Resume() error                  { return nil }
func (t *fileTarget) ExitStatus() (code int, _ bool) { return -1, false }
func (t *fileTarget) Close()                         {}

// procStartNs turns a process's start time in clock ticks after boot
// (/proc/PID/stat field 22) into Unix nanoseconds.
func procStartNs(ticks uint64) int64 {
	const hz = 100 // USER_HZ, fixed by the kernel ABI on Linux
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Now().UnixNano()
	}
	sinceStart := time.Duration(ts.Nano()) - time.Duration(ticks)*time.Second/hz
	return time.Now().Add(-sinceStart).UnixNano()
}
