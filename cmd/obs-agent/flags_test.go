package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/obs-agent/obs-agent/internal/testutil"
)

var (
	agentOnce sync.Once
	agentDir  string
	agentErr  error
)

// agentBinary builds cmd/obs-agent once per test binary, into a directory
// that every user may read (TestUnprivileged runs it as nobody).
func agentBinary(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		if agentDir, agentErr = os.MkdirTemp("", "obs-agent-bin-"); agentErr != nil {
			return
		}
		if agentErr = os.Chmod(agentDir, 0o755); agentErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(agentDir, "obs-agent"), ".").CombinedOutput()
		if err != nil {
			agentErr = errors.New("build obs-agent: " + err.Error() + "\n" + string(out))
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return filepath.Join(agentDir, "obs-agent")
}

// runAgent runs the real binary and returns its stderr and exit code.
func runAgent(t *testing.T, args ...string) (stderr string, code int) {
	t.Helper()
	cmd := exec.Command(agentBinary(t), args...)
	var e strings.Builder
	cmd.Stderr = &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return e.String(), 0
	case errors.As(err, &ee):
		return e.String(), ee.ExitCode()
	}
	t.Fatalf("run obs-agent %v: %v", args, err)
	return "", 0
}

// flagCase is one nonsense value of one flag of one command.
type flagCase struct {
	cmd   string // command path under obs-agent, e.g. "query calls"
	flag  string // long name without dashes
	value string
	want  string // in the error message
}

// freeForm are the flags whose every value is valid, or that a more
// specific test covers; every other non-boolean flag must have a case.
var freeForm = map[string]string{
	"query */func":             "any text is a valid glob",
	"list/binary":              "a missing or non-Go file: TestListErrors",
	"*/db":                     "a directory or a full disk: TestOpenExplains in internal/store; a missing store: TestQueryErrors",
	"export otlp/service-name": "any text is a valid service.name",
	"*/otlp-service-name":      "any text is a valid service.name; without an endpoint it is refused (TestOTLPFlags)",
	"export otlp/state":        "a planted or foreign file: safefile's tests (TestPlantedNames); a corrupt one: TestStateFile in internal/otlp",
}

// TestFlagRanges runs each nonsense value of each flag through the real
// binary: it must exit 1 with a message that names the flag and the
// allowed values, and start, attach or create nothing. It also checks that
// every flag of every command has a case here (or a reason in freeForm),
// so a new flag can't land unchecked.
func TestFlagRanges(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "never-created.db")
	plainFile := filepath.Join(dir, "file")
	if err := os.WriteFile(plainFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 10000) + "*"

	trace := []flagCase{
		{"", "duration", "-5s", "--duration -5s is out of range: want 0 (until the target exits or Ctrl-C), or at least 1ms"},
		{"", "max-probes", "0", "--max-probes 0 is out of range: want -1 (no limit), or at least 1"},
		{"", "max-probes", "-2", "--max-probes -2 is out of range"},
		{"", "sample", "1.5", "--sample 1.5 is out of range: want from 0 to 1"},
		{"", "sample", "-0.1", "--sample -0.1 is out of range"},
		{"", "sample", "NaN", "--sample NaN is out of range"},
		{"", "stats-interval", "0", "--stats-interval 0 is out of range: want from 1s to 1h"},
		{"", "stats-interval", "1ns", "--stats-interval 1ns is out of range"},
		{"", "stats-interval", "2h", "--stats-interval 2h is out of range"},
		{"", "retention", "-1h", "--retention -1h is out of range: want at least 1h"},
		{"", "retention", "0", "--retention 0 is out of range"},
		{"", "sample-interval", "-1s", "--sample-interval -1s is out of range: want 0 (never), or from 100ms to 1h"},
		{"", "sample-interval", "1ns", "--sample-interval 1ns is out of range"},
		{"", "max-overhead", "-1", "--max-overhead -1 is out of range: want 0 (off), or from 0.001 to"},
		{"", "max-overhead", "100000", "--max-overhead 100000 is out of range"},
		{"", "queue-memory", "0", "--queue-memory 0 is out of range: want from 1 to"},
		{"", "queue-memory", "-1", "--queue-memory -1 is out of range"},
		{"", "queue-memory", "99999999999", "--queue-memory 99999999999 is out of range"},
		{"", "ready-file", dir, "--ready-file " + dir + " is a directory"},
		{"", "archive", plainFile, "--archive " + plainFile + ": open " + plainFile + ": not a directory"},
		{"", "memory-limit", "1", "--memory-limit 1 is out of range: want from 64 to"},
		{"", "memory-limit", "-128", "--memory-limit -128 is out of range"},
		{"", "spill-dir", "", "--spill-dir is empty"},
		{"", "group", "no-such-group-obs", `--group: group "no-such-group-obs" does not exist on this host`},
		{"", "ui", "nohost", `--ui "nohost": want HOST:PORT`},
		{"", "ui", "127.0.0.1:70000", `--ui "127.0.0.1:70000": port must be 0..65535`},
		{"", "ui", "0.0.0.0:7070", `--ui "0.0.0.0:7070" is not a loopback address`},
		{"", "metrics-listen", "70000", "--metrics-listen 70000 is out of range: want from 1 to 65535"},
		{"", "metrics-listen", "0", "--metrics-listen 0 is out of range"},
		{"", "metrics-listen", "host.example:9464", `--metrics-listen "host.example:9464": want PORT (served on 127.0.0.1 only) or IP:PORT`},
		{"", "otlp-endpoint", "ftp://x", `--otlp-endpoint: endpoint "ftp://x/v1/traces": want an http:// or https:// URL`},
		{"", "otlp-endpoint", "http://", `--otlp-endpoint: endpoint "http:///v1/traces" has no host`},
		{"", "otlp-header", "novalue", `--otlp-header: header "novalue": want key=value`},
		{"", "otlp-header", "a b=c", `--otlp-header: header "a b": the key must be an HTTP token`},
		{"", "otlp-ca-file", missing, "--otlp-ca-file: stat " + missing + ": no such file or directory"},
		{"", "otlp-compression", "zstd", `--otlp-compression: compression "zstd": want gzip or none`},
	}
	patterns := []flagCase{
		{"", "func", "main.*@2", `bad pattern "main.*@2": sample rate "2" after '@' must be a number from 0 to 1`},
		{"", "func", "@0.5", `bad pattern "@0.5": empty glob`},
		{"", "exclude", "main.x@0.5", `exclude pattern "main.x@0.5": a sample rate only applies to -f patterns`},
	}
	var cases []flagCase
	for _, c := range patterns {
		c.cmd = "list"
		cases = append(cases, c)
	}
	for _, c := range append(trace, patterns...) {
		for _, cmd := range []string{"run", "attach"} {
			c.cmd = cmd
			cases = append(cases, c)
		}
	}
	cases = append(cases,
		flagCase{"attach", "pid", "0", "--pid 0 is out of range: want from 1 to"},
		flagCase{"attach", "pid", "-1", "--pid -1 is out of range"},
		flagCase{"attach", "pid", "99999999", "--pid 99999999 is out of range"},
		flagCase{"attach", "exe", missing, "--exe " + missing + ": no such file or directory"},
		flagCase{"attach", "exe", dir, "--exe " + dir + " is not a regular file"},
		flagCase{"attach", "exe", plainFile, "--exe " + plainFile + ": " + plainFile + " is not a Go program"},
		flagCase{"attach", "cgroup", dir, "--cgroup " + dir + " is not a cgroup v2 directory"},
		flagCase{"list", "pid", "0", "--pid 0 is out of range: want from 1 to"},
		flagCase{"list", "pid", "-5", "--pid -5 is out of range"},
		flagCase{"list", "format", "yaml", `--format "yaml": want table or json`},
		flagCase{"query tree", "limit", "-1", "--limit -1 is out of range: want 0 (all), or at least 1"},
		flagCase{"query tree", "format", "csv", `--format "csv": want table, json`},
		flagCase{"query stats", "by", "file", `--by "file": want function, package or module`},
		flagCase{"query groups", "by", "function", `--by "function": want module or package`},
		flagCase{"retention run", "older-than", "-1h", "--older-than -1h is out of range: want at least 1h"},
		flagCase{"retention run", "older-than", "10m", "--older-than 10m is out of range"},
		flagCase{"retention run", "archive", plainFile, "--archive " + plainFile + ": " + plainFile + " is not a directory"},
		flagCase{"retention run", "group", "no-such-group-obs", `--group: group "no-such-group-obs" does not exist on this host`},
		flagCase{"ui", "listen", "0.0.0.0:7070", `--listen "0.0.0.0:7070" is not a loopback address`},
		flagCase{"ui", "listen", "127.0.0.1:99999", `--listen "127.0.0.1:99999": port must be 0..65535`},
		flagCase{"export otlp", "since", "yesterday", `--since "yesterday": want a duration such as 10m`},
		flagCase{"export otlp", "until", "1600-01-01T00:00:00Z", "--until 1600-01-01T00:00:00Z is out of range"},
		flagCase{"export otlp", "batch", "0", "--batch 0 is out of range: want from 1 to 10000"},
		flagCase{"export otlp", "timeout", "1ms", "--timeout 1ms is out of range: want from 1s to 10m"},
		flagCase{"export otlp", "retry-for", "-1s", "--retry-for -1s is out of range: want 0 (one attempt), or from 1s to 24h"},
		flagCase{"export otlp", "endpoint", "ftp://x", `--endpoint: endpoint "ftp://x/v1/traces": want an http:// or https:// URL`},
		flagCase{"export otlp", "header", "novalue", `--header: header "novalue": want key=value`},
		flagCase{"export otlp", "ca-file", missing, "--ca-file: stat " + missing + ": no such file or directory"},
		flagCase{"export otlp", "compression", "zstd", `--compression: compression "zstd": want gzip or none`},
		flagCase{"retention status", "format", "csv", `--format "csv": want table, json`},
		flagCase{"query processes", "pid", "-1", "--pid -1 is out of range: want 0 (every process), or from 1 to"},
		flagCase{"query processes", "format", "xml", `--format "xml": want table, json, csv`},
		flagCase{"daemon", "config", missing, "config: open " + missing + ": no such file or directory"},
		flagCase{"daemon", "config", dir, "config " + dir + ": not a regular file"},
		flagCase{"daemon", "ready-file", dir, "--ready-file " + dir + " is a directory"},
	)
	for _, q := range []string{"calls", "errors", "stats", "groups", "resources"} {
		cmd := "query " + q
		cases = append(cases,
			flagCase{cmd, "since", "2300-01-01T00:00:00Z", "--since 2300-01-01T00:00:00Z is out of range: want a time from 1677-09-21T00:12:44Z to 2262-04-11T23:47:16Z"},
			flagCase{cmd, "since", "yesterday", `--since "yesterday": want a duration such as 10m`},
			flagCase{cmd, "until", "1600-01-01T00:00:00Z", "--until 1600-01-01T00:00:00Z is out of range"},
			flagCase{cmd, "until", "2h", "--until 2h ("}, // with the default --since 1h
			flagCase{cmd, "pid", "99999999", "--pid 99999999 is out of range: want 0 (every process), or from 1 to"},
			flagCase{cmd, "pid", "-1", "--pid -1 is out of range: want 0 (every process), or from 1 to"},
			flagCase{cmd, "limit", "-1", "--limit -1 is out of range: want 0 (all), or at least 1"},
			flagCase{cmd, "format", "xml", `--format "xml": want table, json, csv`},
		)
		if q == "calls" || q == "errors" || q == "stats" {
			cases = append(cases,
				flagCase{cmd, "binary", "/srv/api/", "--binary /srv/api/: a directory; want the program's path or file name"},
				flagCase{cmd, "binary", strings.Repeat("a", 5000), "bytes, want at most 4096 (a path or a file name)"},
			)
		}
		if q != "resources" {
			cases = append(cases,
				flagCase{cmd, "min-duration", "-1ms", "--min-duration -1ms is out of range: want at least 0"},
				flagCase{cmd, "status", "weird", `--status: unknown status "weird"`},
			)
		}
	}

	// Every non-boolean flag of every command must have a case.
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.cmd+"/"+c.flag] = true
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), "obs-agent ")
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Value.Type() == "bool" || covered[path+"/"+f.Name] {
				return
			}
			for _, k := range []string{path + "/" + f.Name, "*/" + f.Name, strings.Fields(path)[0] + " */" + f.Name} {
				if freeForm[k] != "" {
					return
				}
			}
			t.Errorf("flag --%s of %q has no nonsense-value case in TestFlagRanges", f.Name, path)
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand(nil, nil))

	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	for _, c := range cases {
		t.Run(c.cmd+"/"+c.flag+"="+c.value, func(t *testing.T) {
			args := append(strings.Fields(c.cmd), "--"+c.flag, c.value)
			switch c.cmd {
			case "run":
				args = append(args, "-f", "main.*", "--db", missing, "--", "/bin/true")
			case "attach":
				args = append(args, "-f", "main.*", "--db", missing)
				if c.flag != "pid" {
					args = append(args, "--pid", itoa(sleeper.Process.Pid))
				}
			case "list":
				if c.flag != "pid" {
					args = append(args, "--binary", "/bin/true")
				}
			case "daemon": // the store is named in the config
				if c.flag != "config" {
					args = append(args, "--config", missing+".yaml")
				}
			default:
				args = append(args, "--db", missing)
			}
			if c.cmd == "query tree" {
				args = append(args, "1")
			}
			if c.cmd == "export otlp" && c.flag != "since" {
				args = append(args, "--since", "2h")
			}
			stderr, code := runAgent(t, args...)
			if code != 1 || !strings.Contains(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("obs-agent %s\nexit %d, stderr:\n%s\nwant exit 1 and %q", strings.Join(args, " "), code, stderr, c.want)
			}
			if _, err := os.Stat(missing); err == nil {
				t.Fatalf("a store was created at %s: the command ran", missing)
			}
		})
	}
	t.Run("long flag value is clipped", func(t *testing.T) {
		stderr, code := runAgent(t, "query", "calls", "--limit", long, "--db", missing)
		if code != 1 || !strings.Contains(stderr, `invalid argument "aaaa`) || len(stderr) > 600 {
			t.Errorf("exit %d, %d bytes of stderr:\n%.2000s", code, len(stderr), stderr)
		}
	})
	t.Run("long pattern is clipped", func(t *testing.T) {
		stderr, code := runAgent(t, "list", "--binary", agentBinary(t), "-f", long)
		if code != 1 || !strings.Contains(stderr, `pattern "aaaa`) || !strings.Contains(stderr, "… (10001 bytes)") || len(stderr) > 1000 {
			t.Errorf("exit %d, %d bytes of stderr:\n%.2000s", code, len(stderr), stderr)
		}
	})
}

// TestMessages checks the messages of point 8 of the audit that need no
// root: each says what is wrong, once.
func TestMessages(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args      []string
		want, not string
	}{
		{[]string{"query", "bogus", "--db", "x"}, `unknown command "bogus" for "obs-agent query"`, "unknown flag"},
		{[]string{"query", "error", "--db", "x"}, `unknown command "error" for "obs-agent query"; did you mean errors?`, "unknown flag"},
		{[]string{"retention", "stat", "--older-than", "1h"}, `unknown command "stat" for "obs-agent retention"; did you mean status?`, "unknown flag"},
		{[]string{"query", "calls", "--db", dir}, "it is a directory; a store is a file, e.g. " + filepath.Join(dir, "obs.db"), ""},
		{[]string{"list", "--binary", "/bin/true"}, "/bin/true is not a Go program", ""},
	}
	if comm, _ := os.ReadFile("/proc/2/comm"); string(comm) == "kthreadd\n" {
		cases = append(cases, struct {
			args      []string
			want, not string
		}{[]string{"list", "--pid", "2"}, "pid 2 (kthreadd) is a kernel thread: it runs no program", "stat /proc"})
	}
	for _, c := range cases {
		stderr, code := runAgent(t, c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) || (c.not != "" && strings.Contains(stderr, c.not)) {
			t.Errorf("obs-agent %s\nexit %d, stderr:\n%s\nwant exit 1 and %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
		if n := strings.Count(stderr, "not a Go binary"); n > 1 {
			t.Errorf("obs-agent %s says it %d times:\n%s", strings.Join(c.args, " "), n, stderr)
		}
	}
}

// TestReadOnlyArchive: an --archive on a read-only file system is refused
// at start, naming the flag and the cause, never "pass another --db".
func TestReadOnlyArchive(t *testing.T) {
	testutil.RequireRoot(t)
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
		t.Skipf("mount a read-only tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	db, _ := testStore(t)
	arch := filepath.Join(mnt, "archive")
	for _, args := range [][]string{
		{"retention", "run", "--db", db, "--archive", arch},
		{"run", "-f", "main.*", "--db", db, "--archive", arch, "--", "/bin/true"},
	} {
		stderr, code := runAgent(t, args...)
		if code != 1 || !strings.Contains(stderr, "--archive "+arch+": cannot write to "+mnt+": read-only file system") || strings.Contains(stderr, "--db") {
			t.Errorf("obs-agent %s\nexit %d, stderr:\n%s", strings.Join(args, " "), code, stderr)
		}
	}
}
