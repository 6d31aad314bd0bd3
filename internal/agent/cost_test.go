package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obs-agent/obs-agent/internal/otlp/otlptest"
	"github.com/obs-agent/obs-agent/internal/testutil"
)

// What the cost figures measure, and why they are computed this way.
//
// The real obs-agent binary runs as a subprocess of the test, and the
// traced program runs as obs-agent's child: obs-agent starts it under
// ptrace and reaps it with wait4. The rusage that the test's wait4 returns
// for obs-agent (cmd.ProcessState.SysUsage) is not obs-agent's alone. The
// kernel fills it with getrusage(child, RUSAGE_BOTH) (kernel/exit.c,
// wait_task_zombie): obs-agent's own CPU plus that of every child it
// reaped, here the target. Its ru_maxrss is worse than "the larger of the
// two": exec folds the high-water RSS of the mm it replaces into the new
// program's maxrss (exec_mmap, setmax_mm_hiwater_rss), and Go starts
// children with CLONE_VM|CLONE_VFORK, so obs-agent's ru_maxrss includes the
// test process's RSS at the moment it was started, and the target's
// includes obs-agent's. Measured: the test process, holding 164k calls it
// had just read, made wait4 report 133 MiB for an agent whose own peak
// was 88 MiB, and `load flood` (2 MiB on its own) reports 21 MiB.
//
// So the agent's own figures are taken as follows:
//   - CPU: the wait4 user+sys time minus the target's own CPU. The load
//     target prints its getrusage(RUSAGE_SELF) as its last act ("self
//     cpu_us=..."). The cross-check is obs-agent's own utime+stime from
//     /proc/PID/stat, polled every 20 ms while it runs, and read once more
//     from the zombie before it is reaped; it agrees to within a tick.
//   - Peak RSS: VmHWM from /proc/PID/status, polled every 20 ms. It is the
//     high-water mark of obs-agent's own mm since its exec, and it only
//     grows; only a peak in the last 20 ms before exit can be missed (a
//     zombie has no mm to read).
//     Most of it is not the agent's heap: the BPF ring buffers (16 + 8 MiB)
//     are mmapped into the agent with their data pages mapped twice, about
//     48 MiB of file-backed RSS once touched, plus the binary's text. The
//     largest RssAnon polled (heap, stacks) is reported beside it.
//   - Steady-state CPU: the slope of obs-agent's own utime+stime over
//     the polls taken while the target runs. Startup (reading symbols,
//     loading BPF) and shutdown (detach, final flush) are left out.

var (
	agentBinOnce sync.Once
	agentBinPath string
	agentBinErr  error
)

// agentBinary builds ./cmd/obs-agent once per test binary.
func agentBinary(tb testing.TB) string {
	tb.Helper()
	root := testutil.RepoRoot(tb)
	agentBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "obs-agent-bin-")
		if err != nil {
			agentBinErr = err
			return
		}
		out := filepath.Join(dir, "obs-agent")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/obs-agent")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		if b, err := cmd.CombinedOutput(); err != nil {
			agentBinErr = fmt.Errorf("build obs-agent: %v\n%s", err, b)
			return
		}
		agentBinPath = out
	})
	if agentBinErr != nil {
		tb.Fatal(agentBinErr)
	}
	return agentBinPath
}

// made is what the load target says it did, per function.
type made struct{ calls, errors uint64 }

// loadOutput is the parsed stdout of testdata/load.
type loadOutput struct {
	made        map[string]made
	selfCPU     time.Duration
	selfRSSKiB  int64
	sawSelfLine bool
}

func parseLoad(tb testing.TB, out string) loadOutput {
	tb.Helper()
	lo := loadOutput{made: map[string]made{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		var fn string
		var m made
		var us, kb int64
		switch {
		case strings.HasPrefix(line, "made "):
			if _, err := fmt.Sscanf(line, "made %s calls=%d errors=%d", &fn, &m.calls, &m.errors); err != nil {
				tb.Fatalf("parse %q: %v", line, err)
			}
			lo.made[fn] = m
		case strings.HasPrefix(line, "self "):
			if _, err := fmt.Sscanf(line, "self cpu_us=%d maxrss_kb=%d", &us, &kb); err != nil {
				tb.Fatalf("parse %q: %v", line, err)
			}
			lo.selfCPU, lo.selfRSSKiB, lo.sawSelfLine = time.Duration(us)*time.Microsecond, kb, true
		}
	}
	if len(lo.made) == 0 {
		tb.Fatalf("load printed no counts: %q", out)
	}
	return lo
}

// agentCost is one obs-agent run of the load target, seen from outside.
type agentCost struct {
	Wall           time.Duration // obs-agent start to exit
	CPU            time.Duration // obs-agent's own user+sys (wait4 total minus the target's own)
	Wait4CPU       time.Duration // wait4 user+sys: obs-agent plus its reaped target
	PolledCPU      time.Duration // obs-agent's own utime+stime at the last /proc poll
	SteadyCPUPct   float64       // % of one core while the target ran (own CPU slope); -1 if too short
	PeakRSSKiB     int64         // obs-agent's own peak RSS: VmHWM polled
	PeakAnonKiB    int64         // largest RssAnon polled: heap and stacks, without the mapped rings and text
	Wait4MaxRSSKiB int64         // wait4 ru_maxrss: not obs-agent's own (see above); logged only
	Target         loadOutput
	Stderr         string
	Recorded, Lost uint64 // from the exit line
	DB             string // the store
	// RunDelay is how long obs-agent's threads waited, runnable, for a
	// CPU (the largest sum polled): what a loaded machine took from it.
	RunDelay time.Duration
}

// procSample is one poll of /proc/PID.
type procSample struct {
	at      time.Time
	own     time.Duration // utime+stime
	hwmKiB  int64
	anonKiB int64 // RssAnon
	// runDelay is the time its threads spent runnable, waiting for a CPU
	// (schedstat), summed over the threads alive at the poll.
	runDelay time.Duration
}

var clockTick = time.Second / 100 // USER_HZ is 100 on Linux

func pollProc(pid int) (procSample, bool) {
	s := procSample{at: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, false
	}
	// Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return s, false
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.own = time.Duration(ut+st) * clockTick
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, tk := range tasks {
		var run, wait int64
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, tk.Name())); err == nil {
			fmt.Sscan(string(b), &run, &wait)
			s.runDelay += time.Duration(wait)
		}
	}
	st2, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, false
	}
	for _, line := range strings.Split(string(st2), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%d", &s.hwmKiB)
		}
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%d", &s.anonKiB)
		}
	}
	return s, true
}

// runAgentBinary runs `obs-agent run --db DB FLAGS... -- load ARGS...`
// and measures obs-agent's own cost. runFor is how long the target is
// meant to run: the steady-state CPU figure uses the polls from 1 s after
// the start to 0.5 s before the target's expected end.
func runAgentBinary(tb testing.TB, flags []string, runFor time.Duration, loadArgs ...string) agentCost {
	tb.Helper()
	return runAgentBinaryAt(tb, agentBinary(tb), flags, runFor, loadArgs...)
}

// runAgentBinaryAt is runAgentBinary with the obs-agent binary at agent.
func runAgentBinaryAt(tb testing.TB, agent string, flags []string, runFor time.Duration, loadArgs ...string) agentCost {
	tb.Helper()
	load := testutil.BuildProgram(tb, testutil.Build{Program: "load"})
	db := filepath.Join(tb.TempDir(), "obs.db")
	args := append(append(append([]string{"run", "--db", db}, flags...), "--", load), loadArgs...)
	cmd := exec.Command(agent, args...)
	cmd.Env = profileEnv(tb)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	var samples []procSample
	done := make(chan struct{})
	var pollWG sync.WaitGroup
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			if s, ok := pollProc(cmd.Process.Pid); ok {
				samples = append(samples, s)
			}
			select {
			case <-done:
				return
			case <-tk.C:
			}
		}
	}()
	// Wait for the exit without reaping, so the last poll sees the
	// finished process's final counters (a zombie's /proc/PID/stat
	// still holds them; its status has no VmHWM any more).
	waitExited(cmd.Process.Pid)
	close(done)
	pollWG.Wait()
	if s, ok := pollProc(cmd.Process.Pid); ok {
		samples = append(samples, s)
	}
	err := cmd.Wait()
	c := agentCost{Wall: time.Since(t0), Stderr: stderr.String(), DB: db}
	if err != nil {
		tb.Fatalf("obs-agent %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	c.Target = parseLoad(tb, stdout.String())
	if !c.Target.sawSelfLine {
		tb.Fatalf("load printed no rusage line: %q", stdout.String())
	}
	ps := cmd.ProcessState
	ru := ps.SysUsage().(*syscall.Rusage)
	c.Wait4CPU = ps.UserTime() + ps.SystemTime()
	c.CPU = c.Wait4CPU - c.Target.selfCPU
	c.Wait4MaxRSSKiB = ru.Maxrss
	for _, s := range samples {
		c.PolledCPU = max(c.PolledCPU, s.own)
		c.PeakRSSKiB = max(c.PeakRSSKiB, s.hwmKiB)
		c.PeakAnonKiB = max(c.PeakAnonKiB, s.anonKiB)
		c.RunDelay = max(c.RunDelay, s.runDelay)
	}
	c.SteadyCPUPct = -1
	var first, last *procSample
	for i := range samples {
		s := &samples[i]
		if s.at.Sub(t0) < time.Second || s.at.Sub(t0) > runFor-500*time.Millisecond {
			continue
		}
		if first == nil {
			first = s
		}
		last = s
	}
	if first != nil && last.at.Sub(first.at) >= time.Second {
		c.SteadyCPUPct = 100 * float64(last.own-first.own) / float64(last.at.Sub(first.at))
	}
	if _, err := fmt.Sscanf(exitLine(c.Stderr), "obs-agent: pid %d: target exited with code 0; recorded %d calls, lost %d",
		new(int), &c.Recorded, &c.Lost); err != nil {
		tb.Fatalf("parse the exit line: %v\nstderr: %s", err, c.Stderr)
	}
	return c
}

// profiledRuns numbers the runs whose CPU profile is written.
var profiledRuns atomic.Int64

// profileEnv is the environment of an obs-agent run. When the test itself
// runs with OBS_AGENT_CPUPROFILE=PATH set (see cmd/obs-agent's
// cpuprofile.go), each run writes its own profile, PATH.N (N counting the
// runs from 1, in the order the benchmark logs them), instead of every run
// overwriting PATH.
func profileEnv(tb testing.TB) []string {
	env := os.Environ()
	path := os.Getenv("OBS_AGENT_CPUPROFILE")
	if path == "" {
		return env
	}
	p := fmt.Sprintf("%s.%d", path, profiledRuns.Add(1))
	tb.Logf("this run's CPU profile: %s", p)
	return append(env, "OBS_AGENT_CPUPROFILE="+p)
}

func exitLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "obs-agent: pid ") {
			return l
		}
	}
	return ""
}

// waitExited blocks until pid has exited, leaving it a zombie (WNOWAIT)
// for cmd.Wait to reap.
func waitExited(pid int) {
	var si unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

func (c agentCost) String() string {
	steady := "n/a"
	if c.SteadyCPUPct >= 0 {
		steady = fmt.Sprintf("%.1f%%", c.SteadyCPUPct)
	}
	return fmt.Sprintf("agent CPU %v over %v wall (%.1f%% of one core for the session; steady %s while the target ran; its threads waited %v for a CPU); "+
		"wait4 CPU %v = agent + target's own %v; agent's own CPU polled from /proc %v; "+
		"agent peak RSS (VmHWM) %.1f MiB, of it anonymous (RssAnon, max polled) %.1f MiB; not used (inflated by exec, see above): wait4 maxrss %.1f MiB, target's self-reported maxrss %.1f MiB",
		c.CPU.Round(time.Millisecond), c.Wall.Round(time.Millisecond), 100*c.CPU.Seconds()/c.Wall.Seconds(), steady, c.RunDelay.Round(time.Millisecond),
		c.Wait4CPU.Round(time.Millisecond), c.Target.selfCPU.Round(time.Millisecond), c.PolledCPU,
		float64(c.PeakRSSKiB)/1024, float64(c.PeakAnonKiB)/1024, float64(c.Wait4MaxRSSKiB)/1024, float64(c.Target.selfRSSKiB)/1024)
}

// BenchmarkAgentCost runs the real obs-agent binary, with its default
// flags, on `load rate 20000 5` (20,000 calls/s of main.work for 5 s, 1%
// errors) and reports the agent's own CPU, as a share of one core, and its
// peak RSS. The circuit breaker is off by default, so every call is seen:
// the run fails if any call made is missing from recorded + lost.
func BenchmarkAgentCost(b *testing.B) {
	testutil.RequireRoot(b)
	const rate, secs = 20000, 5
	agentBinary(b)
	testutil.BuildProgram(b, testutil.Build{Program: "load"})
	b.ResetTimer()
	var steady, session, rss, anon, usPerCall float64
	for i := 0; i < b.N; i++ {
		c := runAgentBinary(b, []string{"-f", "main.work"}, secs*time.Second, "rate", fmt.Sprint(rate), fmt.Sprint(secs), "1")
		m := c.Target.made["main.work"]
		if m.calls != rate*secs || c.Recorded+c.Lost != m.calls {
			b.Fatalf("made %d calls, agent recorded %d lost %d", m.calls, c.Recorded, c.Lost)
		}
		b.Logf("%s", c)
		steady += c.SteadyCPUPct
		session += 100 * c.CPU.Seconds() / c.Wall.Seconds()
		rss = max(rss, float64(c.PeakRSSKiB)/1024)
		anon = max(anon, float64(c.PeakAnonKiB)/1024)
		usPerCall += float64(c.CPU.Microseconds()) / float64(m.calls)
	}
	n := float64(b.N)
	b.ReportMetric(steady/n, "agent-cpu-%")
	b.ReportMetric(session/n, "agent-session-cpu-%")
	b.ReportMetric(usPerCall/n, "agent-cpu-us/call")
	b.ReportMetric(rss, "agent-peak-rss-MiB")
	b.ReportMetric(anon, "agent-peak-anon-MiB")
	b.ReportMetric(rate, "calls/s")
}

// BenchmarkAgentCostSinks measures the agent's CPU per recorded call
// through the whole pipeline (ring read, decode, fan-out, queues, store;
// and OTLP encoding, gzip and requests to an in-process lean receiver), with
// the store as the only sink and with the OTLP sink on (gzip, and
// --otlp-compression none), alternately in one run, on `load flood 2 SECS 1` (two goroutines calling main.work as fast
// as the traps allow, 1% errors). The per-call figure is the steady-state
// slope of the agent's own CPU (startup and detach left out) over the
// target's call rate. Every call must be recorded or counted lost; with
// OTLP, every span the sink counts as sent must have arrived, once, and
// sent + lost must be every record decoded. The share of ok spans the sink
// shed (its queue full while the receiver, on the same machine, lagged)
// is reported, not failed on.
//
// The flood's rate is not the same with OTLP on (the agent takes more of
// the two cores from the target), and the store's per-call cost grows as
// its batches shrink, so the difference of the flood figures counts some
// store cost as OTLP's. The OTLP increment proper is measured too at one
// fixed rate for both (`load rate 60000 SECS 1`, the same calls at the
// same pace): the difference of the agent's steady CPU over that rate
// (otlp-extra-us/call-same-rate).
func BenchmarkAgentCostSinks(b *testing.B) {
	testutil.RequireRoot(b)
	const secs = 4
	agentBinary(b)
	testutil.BuildProgram(b, testutil.Build{Program: "load"})
	b.ResetTimer()
	modes := []string{"store", "otlp gzip", "otlp none"}
	us, shed := map[string]float64{}, map[string]float64{}
	for i := 0; i < b.N; i++ {
		for _, mode := range modes {
			flags := []string{"-f", "main.work"}
			var rcv *otlptest.Receiver
			if mode != "store" {
				rcv = otlptest.NewLeanReceiver(b)
				flags = append(flags, "--otlp-endpoint", rcv.URL(), "--otlp-compression", strings.TrimPrefix(mode, "otlp "))
			}
			c := runAgentBinary(b, flags, secs*time.Second, "flood", "2", fmt.Sprint(secs), "1")
			m := c.Target.made["main.work"]
			if c.Recorded+c.Lost != m.calls || c.SteadyCPUPct < 0 {
				b.Fatalf("made %d calls, agent recorded %d lost %d (steady %.1f%%)", m.calls, c.Recorded, c.Lost, c.SteadyCPUPct)
			}
			rate := float64(m.calls) / secs
			perCall := c.SteadyCPUPct / 100 * 1e6 / rate
			us[mode] += perCall
			if rcv != nil {
				spans, dups := rcv.Lean()
				var sent, lost uint64
				if _, err := fmt.Sscanf(otlpLine(c.Stderr), "  otlp sink: sent %d records, lost %d", &sent, &lost); err != nil {
					b.Fatalf("no otlp line in the exit report: %v\n%s", err, c.Stderr)
				}
				// The sink is handed every record decoded: the calls
				// made less those the kernel dropped (the store may
				// shed some of them on its own).
				decoded := m.calls - kernelDrops(b, c.Stderr)
				if uint64(len(spans)) != sent || dups != 0 || sent+lost != decoded {
					b.Fatalf("receiver holds %d spans (%d twice); the sink sent %d and lost %d of %d decoded records\n%s", len(spans), dups, sent, lost, decoded, c.Stderr)
				}
				shed[mode] += 100 * float64(lost) / float64(decoded)
				rcv.Stop()
			}
			b.Logf("%s: %d calls (%.0f/s), steady agent CPU %.1f%% of a core = %.2f µs/call; %s", mode, m.calls, rate, c.SteadyCPUPct, perCall, c)
		}
	}
	const rateCalls = 60000
	var sameRate float64
	for i := 0; i < b.N; i++ {
		var pct [2]float64
		for j, otlp := range []bool{false, true} {
			flags := []string{"-f", "main.work"}
			var rcv *otlptest.Receiver
			if otlp {
				rcv = otlptest.NewLeanReceiver(b)
				flags = append(flags, "--otlp-endpoint", rcv.URL(), "--otlp-compression", "gzip")
			}
			c := runAgentBinary(b, flags, (secs+2)*time.Second, "rate", fmt.Sprint(rateCalls), fmt.Sprint(secs+2), "1")
			if rcv != nil {
				rcv.Stop()
			}
			m := c.Target.made["main.work"]
			if m.calls != rateCalls*(secs+2) || c.Recorded+c.Lost != m.calls || c.SteadyCPUPct < 0 {
				b.Fatalf("rate run: made %d calls (want %d), agent recorded %d lost %d (steady %.1f%%)", m.calls, rateCalls*(secs+2), c.Recorded, c.Lost, c.SteadyCPUPct)
			}
			pct[j] = c.SteadyCPUPct
			b.Logf("%d calls/s, otlp %v: steady agent CPU %.1f%% of a core = %.2f µs/call", rateCalls, otlp, c.SteadyCPUPct, c.SteadyCPUPct/100*1e6/rateCalls)
		}
		sameRate += (pct[1] - pct[0]) / 100 * 1e6 / rateCalls
	}
	n := float64(b.N)
	b.ReportMetric(sameRate/n, "otlp-extra-us/call-same-rate")
	b.ReportMetric(us["store"]/n, "store-us/call")
	b.ReportMetric(us["otlp gzip"]/n, "store+otlp-us/call")
	b.ReportMetric((us["otlp gzip"]-us["store"])/n, "otlp-extra-us/call")
	b.ReportMetric((us["otlp none"]-us["store"])/n, "otlp-none-extra-us/call")
	b.ReportMetric(shed["otlp gzip"]/n, "otlp-shed-%")
	b.ReportMetric(shed["otlp none"]/n, "otlp-none-shed-%")
}

// BenchmarkAgentCostOldNew compares the agent's CPU per recorded call
// (BenchmarkAgentCostSinks's steady-state figure, divided by the calls
// recorded rather than made; the store as the only sink, `load flood 2 4
// 1`) of this tree's obs-agent ("new") with another
// build of it ("old": the binary at $OBS_AGENT_OLD_BIN, for example one
// built from the commit before a change), run alternately, old, new, new,
// old, ..., b.N times each, so both see the same load of the shared
// machine. It reports each one's mean µs per call and new/old. Skipped
// without OBS_AGENT_OLD_BIN. With OBS_BENCH_OTLP=gzip or none, both run
// with the OTLP sink on as well (that --otlp-compression, to an
// in-process lean receiver, a new one for each run). With
// OBS_BENCH_RATE=N both trace `load rate N 6 1` instead of the flood: a
// fixed N calls a second, so that the machine is not saturated and both
// builds record the same calls. Figures and how they swing on the shared
// VM: docs/performance.md, "The agent's CPU per recorded call, outside
// SQLite".
func BenchmarkAgentCostOldNew(b *testing.B) {
	testutil.RequireRoot(b)
	old := os.Getenv("OBS_AGENT_OLD_BIN")
	if old == "" {
		b.Skip("set OBS_AGENT_OLD_BIN to an obs-agent binary to compare with")
	}
	secs := 4
	load := []string{"flood", "2", fmt.Sprint(secs), "1"}
	if r := os.Getenv("OBS_BENCH_RATE"); r != "" {
		n, err := strconv.Atoi(r)
		if err != nil || n < 1000 || n > 1_000_000 {
			b.Fatalf("OBS_BENCH_RATE=%q: want calls a second, 1000 to 1000000", r)
		}
		secs = 6
		load = []string{"rate", r, fmt.Sprint(secs), "1"}
	}
	bins := [2]string{old, agentBinary(b)}
	testutil.BuildProgram(b, testutil.Build{Program: "load"})
	b.ResetTimer()
	var us [2]float64
	for i := 0; i < 2*b.N; i++ {
		which := i%2 ^ (i/2)%2
		flags := []string{"-f", "main.work"}
		var rcv *otlptest.Receiver
		if comp := os.Getenv("OBS_BENCH_OTLP"); comp != "" {
			rcv = otlptest.NewLeanReceiver(b)
			flags = append(flags, "--otlp-endpoint", rcv.URL(), "--otlp-compression", comp)
		}
		c := runAgentBinaryAt(b, bins[which], flags, time.Duration(secs)*time.Second, load...)
		if rcv != nil {
			rcv.Stop()
		}
		m := c.Target.made["main.work"]
		if c.Recorded+c.Lost != m.calls || c.SteadyCPUPct < 0 {
			b.Fatalf("made %d calls, agent recorded %d lost %d (steady %.1f%%)", m.calls, c.Recorded, c.Lost, c.SteadyCPUPct)
		}
		// Per recorded call: a build that falls behind and sheds ok
		// records in the ring spends less per call made.
		rate := float64(c.Recorded) / float64(secs)
		u := c.SteadyCPUPct / 100 * 1e6 / rate
		us[which] += u
		b.Logf("%s: %d calls made, %d recorded (%.0f/s), lost %d, steady agent CPU %.1f%% of a core = %.2f µs per recorded call", []string{"old", "new"}[which], m.calls, c.Recorded, rate, c.Lost, c.SteadyCPUPct, u)
	}
	n := float64(b.N)
	b.ReportMetric(us[0]/n, "old-us/call")
	b.ReportMetric(us[1]/n, "new-us/call")
	b.ReportMetric(us[1]/us[0], "new/old")
}

func otlpLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "  otlp sink: ") {
			return l
		}
	}
	return ""
}
