package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// MemCgroup is a memory cgroup made for one test, on cgroup v2 or on the
// v1 memory controller, whichever the machine has. It is a child of the
// test's own cgroup, so it also stays inside any limit the test runs
// under.
type MemCgroup struct {
	Dir string
	v2  bool
}

// NewMemCgroup creates the cgroup and removes it when the test ends (after
// its processes exited), or skips with the reason.
func NewMemCgroup(t testing.TB) *MemCgroup {
	t.Helper()
	RequireRoot(t)
	cg, err := newMemCgroup(fmt.Sprintf("obs-agent-test-%d", os.Getpid()))
	if err != nil {
		t.Skipf("needs a memory cgroup (v2 with the memory controller, or the v1 memory hierarchy): %v", err)
	}
	t.Cleanup(func() { os.Remove(cg.Dir) })
	return cg
}

func newMemCgroup(name string) (*MemCgroup, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	if p, ok := own["memory"]; ok {
		if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
			dir := filepath.Join("/sys/fs/cgroup/memory", p, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				return nil, err
			}
			return &MemCgroup{Dir: dir}, nil
		}
	}
	ctrl, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err != nil || !strings.Contains(string(ctrl), "memory") {
		return nil, errors.New("no v1 memory hierarchy and no v2 memory controller at /sys/fs/cgroup")
	}
	// v2: under the test's own cgroup when it delegates the memory
	// controller to children, else under the root.
	for _, parent := range []string{filepath.Join("/sys/fs/cgroup", own[""]), "/sys/fs/cgroup"} {
		sub, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
		if err != nil || !strings.Contains(string(sub), "memory") {
			continue
		}
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		return &MemCgroup{Dir: dir, v2: true}, nil
	}
	return nil, errors.New("the memory controller is not enabled for children of the test's cgroup or of the root")
}

// ownCgroups maps each v1 controller (and "" for v2) to this process's
// cgroup path.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			m[c] = parts[2]
		}
	}
	return m, sc.Err()
}

// V2 reports whether the cgroup is on cgroup v2.
func (c *MemCgroup) V2() bool { return c.v2 }

func (c *MemCgroup) write(file, v string) error {
	return os.WriteFile(filepath.Join(c.Dir, file), []byte(v), 0o644)
}

// SetLimit sets the hard memory limit, swap excluded (the cgroup may not
// swap), so going over it means reclaim and then the OOM killer.
func (c *MemCgroup) SetLimit(bytes int64) error {
	v := strconv.FormatInt(bytes, 10)
	if c.v2 {
		if err := c.write("memory.max", v); err != nil {
			return err
		}
		if err := c.write("memory.swap.max", "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := c.write("memory.limit_in_bytes", v); err != nil {
		return err
	}
	// memsw (memory+swap) exists only with swap accounting.
	if err := c.write("memory.memsw.limit_in_bytes", v); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Command returns a command that runs argv inside the cgroup from its
// first instruction: a shell moves itself into the cgroup, then execs
// argv, so nothing of argv is charged elsewhere.
func (c *MemCgroup) Command(argv ...string) *exec.Cmd {
	script := `echo $$ > "$0" && exec "$@"`
	args := append([]string{"-c", script, filepath.Join(c.Dir, "cgroup.procs")}, argv...)
	return exec.Command("/bin/sh", args...)
}

// OOMKills is the number of processes the OOM killer killed in the cgroup.
func (c *MemCgroup) OOMKills() (int64, error) {
	file := "memory.oom_control"
	if c.v2 {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(c.Dir, file))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no oom_kill line", file)
}

// Peak is the highest memory charge the cgroup has seen, kernel memory
// included.
func (c *MemCgroup) Peak() (int64, error) {
	file := "memory.max_usage_in_bytes"
	if c.v2 {
		file = "memory.peak"
	}
	b, err := os.ReadFile(filepath.Join(c.Dir, file))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// LimitHits is how often the charge reached the limit (reclaim ran).
func (c *MemCgroup) LimitHits() (int64, error) {
	if c.v2 {
		b, err := os.ReadFile(filepath.Join(c.Dir, "memory.events"))
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "max "); ok {
				return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		return 0, nil
	}
	b, err := os.ReadFile(filepath.Join(c.Dir, "memory.failcnt"))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
