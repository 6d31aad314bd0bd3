package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// ProcessExe returns the path that opens the executable of process pid,
// /proc/PID/exe, or an error that says why it cannot be traced: no such
// process, a kernel thread, a zombie, or the kernel's ptrace access check
// (which /proc/PID/exe, like the probes' memory reads, is subject to).
func ProcessExe(pid int) (string, error) {
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	fh, err := os.Open(exe)
	if err == nil {
		fh.Close()
		return exe, nil
	}
	st, serr := readProcStat(pid)
	switch {
	case serr != nil && errors.Is(serr, fs.ErrNotExist):
		return "", fmt.Errorf("pid %d: %w (is the program running? check with 'ps -p %d')", pid, ErrNoProcess, pid)
	case serr != nil:
		return "", fmt.Errorf("pid %d: cannot read its executable %s: %w", pid, exe, err)
	case st.flags&pfKthread != 0:
		return "", fmt.Errorf("pid %d (%s) is a kernel thread: it runs no program, so there is nothing to trace", pid, st.comm)
	case st.state == 'Z' || st.state == 'X':
		return "", fmt.Errorf("pid %d (%s) has exited: it is a zombie waiting for its parent (pid %d) to collect its exit status, and has no program left to trace", pid, st.comm, st.ppid)
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("pid %d (%s): its executable is gone (the process is exiting): %w", pid, st.comm, err)
	case errors.Is(err, fs.ErrPermission) && unreadableFile(exe):
		return "", fmt.Errorf("pid %d (%s): obs-agent may inspect the process but not read its executable file: %s (%w)", pid, st.comm, unreadableBecause(exe), err)
	case errors.Is(err, fs.ErrPermission):
		return "", fmt.Errorf("pid %d (%s): the kernel denied access to its executable and memory: %s (%w)", pid, st.comm, deniedBecause(pid), err)
	}
	return "", fmt.Errorf("pid %d (%s): cannot read its executable %s: %w", pid, st.comm, exe, err)
}

// unreadableFile tells the two refusals of opening /proc/PID/exe apart:
// reading the link needs only the ptrace access check, opening it also
// needs read permission on the file itself. When the link reads, the
// process is open to inspection and only the file's mode is in the way
// (root without CAP_DAC_READ_SEARCH, as under a unit that grants only the
// capabilities it needs, and a 0700 program of another user).
func unreadableFile(exe string) bool {
	_, err := os.Readlink(exe)
	return err == nil
}

// unreadableBecause describes the file's owner and mode, and the fix.
func unreadableBecause(exe string) string {
	var desc string
	if fi, err := os.Stat(exe); err == nil {
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			desc = userName(int(sys.Uid)) + ", "
		}
		desc = fmt.Sprintf("it is owned by %smode %04o", desc, fi.Mode().Perm())
	}
	if target, err := os.Readlink(exe); err == nil {
		desc = target + ": " + desc
	}
	return desc + "; obs-agent runs without CAP_DAC_READ_SEARCH (or CAP_DAC_OVERRIDE), so only the mode decides: grant it CAP_DAC_READ_SEARCH, or run it as root with every capability"
}

// pfKthread is PF_KTHREAD in the flags of /proc/PID/stat.
const pfKthread = 0x00200000

type procStat struct {
	comm  string
	state byte
	ppid  int
	flags uint64
}

// readProcStat reads the fields of /proc/PID/stat that say what kind of
// process it is; anyone may read them.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// "pid (comm) state ppid pgrp session tty tpgid flags ...": comm may
	// hold spaces and parentheses, so split at the last ')'.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 7 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	st := procStat{comm: s[open+1 : end], state: f[0][0]}
	st.ppid, _ = strconv.Atoi(f[1])
	st.flags, _ = strconv.ParseUint(f[6], 10, 64)
	return st, nil
}

// Linux capability numbers (linux/capability.h).
const capSysPtrace = 19

// deniedBecause names the likeliest reason the kernel's ptrace access check
// refused this process access to pid: the checks are, in order, the same
// user (or CAP_SYS_PTRACE), the target's capabilities being a subset of
// ours (or CAP_SYS_PTRACE), then the security modules.
func deniedBecause(pid int) string {
	self, _ := readStatus("self")
	target, _ := readStatus(strconv.Itoa(pid))
	hasPtrace := self.capEff&(1<<capSysPtrace) != 0
	if v, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); err == nil {
		switch strings.TrimSpace(string(v)) {
		case "3":
			return "kernel.yama.ptrace_scope is 3, which forbids every process, root included, to inspect another (only a reboot lowers it)"
		case "2":
			if !hasPtrace {
				return "kernel.yama.ptrace_scope is 2, which lets only a process with CAP_SYS_PTRACE inspect another: run obs-agent as root"
			}
		}
	}
	if !hasPtrace {
		if target.uid != self.uid {
			return fmt.Sprintf("it runs as %s and obs-agent as %s without CAP_SYS_PTRACE: run obs-agent as root (sudo), or grant it CAP_SYS_PTRACE", userName(target.uid), userName(self.uid))
		}
		if target.capPrm&^self.capEff != 0 {
			return fmt.Sprintf("it holds capabilities that obs-agent lacks (%#x) and obs-agent has no CAP_SYS_PTRACE: run obs-agent as root (sudo)", target.capPrm&^self.capEff)
		}
		return "obs-agent has no CAP_SYS_PTRACE, and the process is not dumpable (it changed its credentials or called prctl(PR_SET_DUMPABLE, 0)): run obs-agent as root (sudo)"
	}
	return "obs-agent runs with CAP_SYS_PTRACE, so a security policy protects this process (a Linux security module such as SELinux, AppArmor, Landlock or a BPF LSM program; the audit log names it), or it lives in a user namespace obs-agent has no privilege over; obs-agent cannot trace it"
}

type status struct {
	uid            int
	capEff, capPrm uint64
}

// readStatus reads the effective uid and the capability sets of
// /proc/WHO/status.
func readStatus(who string) (status, error) {
	b, err := os.ReadFile("/proc/" + who + "/status")
	if err != nil {
		return status{uid: -1}, err
	}
	st := status{uid: -1}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "Uid":
			if len(f) > 1 {
				st.uid, _ = strconv.Atoi(f[1])
			}
		case "CapEff":
			st.capEff, _ = strconv.ParseUint(f[0], 16, 64)
		case "CapPrm":
			st.capPrm, _ = strconv.ParseUint(f[0], 16, 64)
		}
	}
	return st, nil
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("user %s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}
