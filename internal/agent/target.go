package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNoProcess is returned when the pid names no process.
var ErrNoProcess = errors.New("no such process")

// Attach traces an already running process until it exits, ctx is done or
// opts.Duration passes.
func Attach(ctx context.Context, pid int, opts Options) (*Result, error) {
	t, err := openProcess(pid)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if err := refuseSelf(pid, t.ExePath()); err != nil {
		return nil, err
	}
	lock, err := lockTarget(pid)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	s, err := prepareExe(opts, t, prepare)
	if err != nil {
		return nil, err
	}
	defer s.bin.Close()
	return s.run(ctx, t)
}

// Run starts argv with the probes attached before its first instruction,
// passes its stdio through, and traces it until it exits. Signals from
// opts.Signals are forwarded to it. When tracing ends first (--duration,
// or ctx is done), the probes are detached and Run still waits for the
// program, forwarding signals, so that its exit code is the result and it
// is never left behind.
func Run(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer, opts Options) (*Result, error) {
	if len(argv) == 0 {
		return nil, errors.New("no program to run: give it after --, e.g. obs-agent run -f 'main.*' -- ./myservice")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("program %q: %w", argv[0], err)
	}
	if err := refuseSelf(0, path); err != nil {
		return nil, err
	}
	s, err := prepare(opts, path)
	if err != nil {
		return nil, err
	}
	defer s.bin.Close()
	t, err := spawnHeld(path, argv, stdin, stdout, stderr)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	// Checked again on what was really executed: the path could have been
	// replaced since the first check.
	if err := refuseSelf(t.PID(), fmt.Sprintf("/proc/%d/exe", t.PID())); err != nil {
		t.kill()
		return nil, err
	}
	lock, err := lockTarget(t.PID())
	if err != nil {
		t.kill()
		return nil, err
	}
	defer lock.release()
	stopForwarding := t.forwardSignals(opts.Signals, s.log)
	defer stopForwarding()
	res, err := s.run(ctx, t)
	if err != nil {
		// The program must not be left stopped or orphaned.
		t.kill()
		return res, err
	}
	if res.ExitCode < 0 {
		s.log.Info("tracing ended; waiting for the program to exit", "pid", t.PID(), "reason", res.ExitReason)
		<-t.Exited()
		res.ExitCode, res.Signaled = t.ExitStatus()
	}
	return res, nil
}

// prepareExe reads the executable of a running process and makes sure the
// process did not execve another program meanwhile. A process that was just
// forked (by a shell's `&`, or os/exec, whose Start returned here before
// the child's exec had replaced its image: seen in the 6.12 guests) still
// runs its parent's program, and probe offsets computed from that file
// would be wrong for the program it is about to run. The read is retried
// while the executable changes under it.
func prepareExe(opts Options, p *process, prep func(Options, string) (*session, error)) (*session, error) {
	for attempt := 1; ; attempt++ {
		before, err := os.Stat(p.exe)
		if err != nil {
			return nil, fmt.Errorf("pid %d: %w", p.pid, err)
		}
		s, err := prep(opts, p.exe)
		after, serr := os.Stat(p.exe)
		if serr == nil && os.SameFile(before, after) {
			p.parsed = after
			return s, err
		}
		if s != nil {
			s.bin.Close()
		}
		if attempt == 3 {
			return nil, fmt.Errorf("pid %d started new programs (execve) while obs-agent read its executable, %d times; attach again once it runs the program to trace", p.pid, attempt)
		}
	}
}

// process is a running process found by pid. It is watched through a
// pidfd, which stays valid (and unambiguous) even if the pid is reused.
type process struct {
	pid    int
	exe    string
	parsed os.FileInfo // the executable the probe sites were computed from
	pidfd  int
	exited chan struct{}
	once   sync.Once
	// stopR and stopW are a pipe that wakes watch when the session ends
	// before the process does; watched is closed when watch has returned.
	stopR, stopW int
	watched      chan struct{}
}

func openProcess(pid int) (*process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("invalid pid %d", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("pid %d: %w (is the program running? check with 'ps -p %d')", pid, ErrNoProcess, pid)
		}
		return nil, fmt.Errorf("pid %d: open pidfd: %w", pid, err)
	}
	exe, err := ProcessExe(pid)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	var stop [2]int
	if err := unix.Pipe2(stop[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	p := &process{pid: pid, exe: exe, pidfd: fd, exited: make(chan struct{}),
		stopR: stop[0], stopW: stop[1], watched: make(chan struct{})}
	go p.watch()
	return p, nil
}

// watch closes exited when the pidfd becomes readable: the process ended.
// It returns without closing exited when Close wakes it first (a failed
// attach, or a session that ended before its target): closing the pidfd
// alone would not wake a poll already waiting on it, and the goroutine
// would wait for as long as the target lives.
func (p *process) watch() {
	defer close(p.watched)
	fds := []unix.PollFd{
		{Fd: int32(p.pidfd), Events: unix.POLLIN},
		{Fd: int32(p.stopR), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Poll(fds, -1)
		if err == nil || !errors.Is(err, unix.EINTR) {
			if err == nil && fds[0].Revents == 0 {
				return // stopped by Close
			}
			break
		}
	}
	p.once.Do(func() { close(p.exited) })
}

// exeChanged reports whether the process runs another executable than the
// one its probe sites were computed from. Called after the probes are
// attached: a process only moves forward through execs, so an unchanged
// executable now means it was unchanged when the probes (which open
// /proc/PID/exe) went in, and every site is where it was computed.
func (p *process) exeChanged() bool {
	if p.parsed == nil {
		return false
	}
	now, err := os.Stat(p.exe)
	return err == nil && !os.SameFile(now, p.parsed)
}

func (p *process) PID() int                { return p.pid }
func (p *process) ExePath() string         { return p.exe }
func (p *process) Exited() <-chan struct{} { return p.exited }
func (p *process) Resume() error           { return nil }
func (p *process) ExitStatus() (int, bool) { return -1, false }

// Close stops watch, waits for it, then closes the descriptors (a pidfd
// closed under a running poll could be reused by another file meanwhile).
func (p *process) Close() {
	unix.Write(p.stopW, []byte{0})
	<-p.watched
	unix.Close(p.pidfd)
	unix.Close(p.stopR)
	unix.Close(p.stopW)
}

// child is a program started by Run. It is started under ptrace so that it
// stops right after execve, before its first instruction: the probes go in
// while it is stopped, and Resume detaches ptrace to let it run.
type child struct {
	cmd     *exec.Cmd
	pidfd   int // signals go through it: it never names a reused pid
	exe     string
	exited  chan struct{}
	status  syscall.WaitStatus
	resume  chan struct{}
	resumed chan error
}

func spawnHeld(path string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (*child, error) {
	c := &child{
		exe:     path,
		exited:  make(chan struct{}),
		resume:  make(chan struct{}),
		resumed: make(chan error, 1),
	}
	started := make(chan error, 1)
	// ptrace requests must come from the thread that started the tracee,
	// so one locked goroutine starts it, later detaches it, and reaps it.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(path, argv[1:]...)
		cmd.Args = argv
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
		err := cmd.Start()
		if err != nil {
			started <- fmt.Errorf("start %s: %w", path, err)
			return
		}
		c.cmd = cmd
		if c.pidfd, err = unix.PidfdOpen(cmd.Process.Pid, 0); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			close(c.exited)
			started <- fmt.Errorf("open a pidfd for %s: %w", path, err)
			return
		}
		// The child stops with SIGTRAP after execve.
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(cmd.Process.Pid, &ws, 0, nil); err != nil {
			started <- fmt.Errorf("wait for %s to exec: %w", path, err)
			return
		}
		if !ws.Stopped() {
			c.status = ws
			close(c.exited)
			started <- fmt.Errorf("%s exited before it started (status %v)", path, ws)
			return
		}
		// Should obs-agent die before letting the program go, the kernel
		// would detach it with the exec SIGTRAP still pending, which kills
		// it with a core dump. Exit-kill ends it cleanly instead: it has
		// not run a single instruction of its own yet.
		if err := syscall.PtraceSetOptions(cmd.Process.Pid, unix.PTRACE_O_EXITKILL); err != nil {
			unix.Close(c.pidfd)
			cmd.Process.Kill()
			cmd.Wait()
			close(c.exited)
			started <- fmt.Errorf("hold %s at exec: %w", path, err)
			return
		}
		started <- nil
		<-c.resume
		c.resumed <- syscall.PtraceDetach(cmd.Process.Pid)
		// Reap it; cmd.Wait also waits for the stdio copies to finish.
		err = cmd.Wait()
		if cmd.ProcessState != nil {
			c.status = cmd.ProcessState.Sys().(syscall.WaitStatus)
		} else if err != nil {
			c.status = syscall.WaitStatus(0xff00)
		}
		close(c.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return c, nil
}

func (c *child) PID() int                { return c.cmd.Process.Pid }
func (c *child) ExePath() string         { return c.exe }
func (c *child) Exited() <-chan struct{} { return c.exited }

func (c *child) Resume() error {
	select {
	case <-c.resume:
		return nil // already resumed
	default:
	}
	close(c.resume)
	return <-c.resumed
}

func (c *child) ExitStatus() (int, bool) {
	if c.status.Signaled() {
		return int(c.status.Signal()), true
	}
	return c.status.ExitStatus(), false
}

// kill ends the child and lets it be reaped, for when tracing could not
// start.
func (c *child) kill() {
	c.cmd.Process.Kill()
	select {
	case <-c.resume:
	default:
		close(c.resume)
		<-c.resumed
	}
	<-c.exited
}

func (c *child) Close() { unix.Close(c.pidfd) }

// forwardSignals passes every signal from sigs to the program until it
// exits or the returned stop is called. A signal that the terminal sent
// to its whole foreground process group (Ctrl-C's SIGINT, a hangup's
// SIGHUP) has reached the program already, which runs in obs-agent's
// process group: sending it again would make a program that exits on its
// second SIGINT skip its graceful shutdown. Those are not forwarded.
func (c *child) forwardSignals(sigs <-chan os.Signal, log *slog.Logger) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	send := func(sig os.Signal, fromTerminalToo bool) {
		ss, ok := sig.(syscall.Signal)
		if !ok {
			return
		}
		if fromTerminalToo && (ss == syscall.SIGINT || ss == syscall.SIGHUP) && inTerminalForeground() {
			log.Debug("signal from the terminal reached the program directly", "signal", ss)
			return
		}
		// The pidfd stays valid after the child is reaped, and then fails
		// with ESRCH: a signal can never reach a reused pid.
		if err := unix.PidfdSendSignal(c.pidfd, ss, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			log.Warn("forward signal", "signal", ss, "pid", c.PID(), "err", err)
		} else {
			log.Debug("forwarded signal", "signal", ss, "pid", c.PID())
		}
	}
	go func() {
		defer close(finished)
		// Signals that came before the program existed never reached it,
		// from a terminal or not: they all go to it (it is held at its
		// first instruction, so it takes them as soon as it runs).
		for pending := true; pending; {
			select {
			case sig := <-sigs:
				send(sig, false)
			default:
				pending = false
			}
		}
		for {
			select {
			case <-done:
				return
			case <-c.exited:
				return
			case sig := <-sigs:
				send(sig, true)
			}
		}
	}()
	return func() {
		select {
		case <-done:
		default:
			close(done)
		}
		<-finished
	}
}

// inTerminalForeground reports whether obs-agent runs in the foreground
// process group of its controlling terminal: then the terminal's SIGINT
// and SIGHUP go to every process of that group, the program included.
func inTerminalForeground() bool {
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return false // no controlling terminal
	}
	defer tty.Close()
	fg, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP)
	return err == nil && fg == unix.Getpgrp()
}
