package agent

import (
	"bytes"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/safefile"
)

// ErrSelf is returned for a target that is obs-agent itself: its probes
// would fire on the agent's own work, which writes more records, which fire
// more probes (a feedback loop that grows without bound).
var ErrSelf = errors.New("refusing to trace obs-agent itself")

// ErrTargetBusy is matched (errors.Is) by the error returned when another
// obs-agent is tracing the target.
var ErrTargetBusy = errors.New("the process is already traced by another obs-agent")

// busyError says which agent holds the target; it is ErrTargetBusy.
type busyError struct{ msg string }

func (e *busyError) Error() string        { return e.msg }
func (e *busyError) Is(target error) bool { return target == ErrTargetBusy }

// agentMainPackage is obs-agent's main package in the Go build info, which
// every build of obs-agent carries, whatever its path or version.
const agentMainPackage = "github.com/obs-agent/obs-agent/cmd/obs-agent"

// refuseSelf fails when the target (pid, or 0 before `run` starts it, and
// its executable) is this process, runs this process's executable (same
// device and inode as /proc/self/exe, whatever path or link leads to it),
// or is any build of obs-agent.
func refuseSelf(pid int, exe string) error {
	what := exe
	if pid > 0 {
		what = fmt.Sprintf("pid %d", pid)
	}
	if pid == os.Getpid() {
		return fmt.Errorf("%w: %s is this obs-agent process", ErrSelf, what)
	}
	var self, tgt unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &self); err != nil {
		return fmt.Errorf("read this process's executable: %w", err)
	}
	if err := unix.Stat(exe, &tgt); err == nil && tgt.Dev == self.Dev && tgt.Ino == self.Ino {
		return fmt.Errorf("%w: %s runs this obs-agent's own executable", ErrSelf, what)
	}
	if bi, err := buildinfo.ReadFile(exe); err == nil && bi.Path == agentMainPackage {
		return fmt.Errorf("%w: %s is a build of obs-agent (%s %s)", ErrSelf, what, bi.Path, bi.Main.Version)
	}
	return nil
}

// targetLock is held for as long as a session traces one process, so that
// a second obs-agent refuses the same process instead of storing every call
// twice.
//
// It is an open file description lock (F_OFD_SETLK) on a file named after
// the target's pid and start time, in a directory only root can write
// (/run/obs-agent). The kernel drops the lock when the agent exits, however
// it exits, so a crash leaves nothing to clean up; the start time in the
// name keeps a reused pid from meeting the lock of the process that had it
// before. The holder writes its own pid into the file, which is how a
// refused agent names it (an OFD lock's owner is not reported by
// F_OFD_GETLK).
type targetLock struct {
	dir  *safefile.Dir
	name string
	f    *os.File
}

// lockDir is where the lock files live: /run/obs-agent for root. An agent
// running as another user (with capabilities) uses its own runtime
// directory, so it only meets agents of the same user.
var lockDir = func() string {
	if os.Geteuid() == 0 {
		return "/run/obs-agent"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "obs-agent")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("obs-agent-%d", os.Geteuid()))
}

// lockTarget takes the lock of process pid, or fails with ErrTargetBusy
// naming the agent that holds it.
func lockTarget(pid int) (*targetLock, error) {
	start, err := startTime(pid)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	d, err := safefile.MkdirAllPrivate(lockDir())
	if err != nil {
		return nil, fmt.Errorf("per-target lock: %w", err)
	}
	name := fmt.Sprintf("pid-%d-%d.lock", pid, start)
	for range 10 {
		f, _, err := d.Ensure(name, 0o600)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("per-target lock: %w", err)
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			holder, _ := readHolder(f)
			f.Close()
			d.Close()
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
				by := "another obs-agent"
				if holder > 0 {
					by = fmt.Sprintf("obs-agent pid %d", holder)
				}
				return nil, &busyError{fmt.Sprintf("pid %d is already traced by %s; stop that agent first (two agents on one process would store every call twice)", pid, by)}
			}
			return nil, fmt.Errorf("per-target lock %s: %w", filepath.Join(d.Path(), name), err)
		}
		// The holder before us may have removed the name between our open
		// and our lock: then the lock is on a file nobody else will open.
		var fst unix.Stat_t
		st, serr := d.Lstat(name)
		if serr == nil && unix.Fstat(int(f.Fd()), &fst) == nil && fst.Dev == st.Dev && fst.Ino == st.Ino {
			if err := writeHolder(f); err != nil {
				f.Close()
				d.Close()
				return nil, fmt.Errorf("per-target lock: %w", err)
			}
			return &targetLock{dir: d, name: name, f: f}, nil
		}
		f.Close()
	}
	d.Close()
	return nil, fmt.Errorf("per-target lock for pid %d: the lock file kept changing", pid)
}

func writeHolder(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

func readHolder(f *os.File) (int, error) {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	return strconv.Atoi(string(bytes.TrimSpace(b[:n])))
}

// release removes the file, then drops the lock by closing it.
func (l *targetLock) release() {
	if l == nil {
		return
	}
	l.dir.Remove(l.name)
	l.f.Close()
	l.dir.Close()
}
