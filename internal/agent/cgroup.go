package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroup is a cgroup v2 target: the directory, its path below the root of
// the cgroup2 hierarchy (as /proc/PID/cgroup names it), its id (the inode
// number of the directory, which is what bpf_get_current_cgroup_id
// returns) and its level (depth below the root, the argument of
// bpf_get_current_ancestor_cgroup_id).
type cgroup struct {
	dir   string
	rel   string
	id    uint64
	level uint32
}

// CheckCgroup refuses a --cgroup path that is no cgroup v2 directory,
// before anything starts.
func CheckCgroup(path string) error {
	_, err := openCgroup(path)
	return err
}

// openCgroup resolves a cgroup v2 directory given by its path on a cgroup2
// mount (e.g. /sys/fs/cgroup/system.slice/api.service).
func openCgroup(path string) (*cgroup, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("--cgroup %s: %w", path, err)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, fmt.Errorf("--cgroup %s: %w", path, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(abs, &sfs); err != nil {
		return nil, fmt.Errorf("--cgroup %s: %w", path, err)
	}
	if sfs.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("--cgroup %s is not a cgroup v2 directory: give a directory under the cgroup2 mount (%s)", path, cgroup2Hint())
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return nil, fmt.Errorf("--cgroup %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("--cgroup %s is not a directory: give the cgroup's directory", path)
	}
	root, err := cgroup2Root(abs)
	if err != nil {
		return nil, fmt.Errorf("--cgroup %s: %w", path, err)
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil {
		return nil, fmt.Errorf("--cgroup %s: %w", path, err)
	}
	cg := &cgroup{dir: abs, rel: "/", id: st.Ino}
	if rel != "." {
		cg.rel = "/" + rel
		cg.level = uint32(strings.Count(rel, "/") + 1)
	}
	return cg, nil
}

// cgroup2Mounts are the mount points of cgroup2 file systems
// (/proc/self/mountinfo: the mount point is field 5, the type follows " - ").
func cgroup2Mounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fs := strings.Fields(pre)
		if !ok || len(fs) < 5 || !strings.HasPrefix(post, "cgroup2 ") || fs[3] != "/" {
			continue
		}
		out = append(out, unescapeMount(fs[4]))
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroup2Root is the cgroup2 mount point that dir is under.
func cgroup2Root(dir string) (string, error) {
	best := ""
	for _, m := range cgroup2Mounts() {
		if (dir == m || strings.HasPrefix(dir, strings.TrimSuffix(m, "/")+"/")) && len(m) > len(best) {
			best = m
		}
	}
	if best == "" {
		return "", errors.New("no cgroup2 mount holds it (see /proc/self/mountinfo)")
	}
	return best, nil
}

func cgroup2Hint() string {
	if ms := cgroup2Mounts(); len(ms) > 0 {
		return "mounted at " + strings.Join(ms, ", ")
	}
	return "none is mounted on this host: cgroup v2 is needed"
}

// procs lists the processes of the cgroup and of its descendants.
func (cg *cgroup) procs() ([]uint32, error) {
	var out []uint32
	err := filepath.WalkDir(cg.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != cg.dir {
				return nil // a child cgroup removed meanwhile
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != cg.dir {
				return nil
			}
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.ParseUint(f, 10, 32); err == nil {
				out = append(out, uint32(n))
			}
		}
		return nil
	})
	return out, err
}

// holds reports whether process pid is in the cgroup or a descendant
// (its cgroup v2 path, the "0::" line of /proc/PID/cgroup).
func (cg *cgroup) holds(pid uint32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		p, ok := strings.CutPrefix(line, "0::")
		if !ok {
			continue
		}
		return cg.rel == "/" || p == cg.rel || strings.HasPrefix(p, cg.rel+"/")
	}
	return false
}

// cgroupFile is one executable file that processes of a cgroup run.
type cgroupFile struct {
	open string // a path that opens it: /proc/PID/exe of one of them
	name string // its path as that process sees it, for rows and logs
	id   fileID
}

// files groups the cgroup's processes by executable file, in order of
// first appearance.
func (cg *cgroup) files() ([]cgroupFile, error) {
	pids, err := cg.procs()
	if err != nil {
		return nil, err
	}
	seen := map[fileID]bool{}
	var out []cgroupFile
	for _, pid := range pids {
		exe := fmt.Sprintf("/proc/%d/exe", pid)
		var st unix.Stat_t
		if unix.Stat(exe, &st) != nil {
			continue // a kernel thread, or gone
		}
		id := fileID{uint64(st.Dev), st.Ino}
		if seen[id] {
			continue
		}
		seen[id] = true
		name, err := os.Readlink(exe)
		if err != nil {
			continue
		}
		out = append(out, cgroupFile{open: exe, name: name, id: id})
	}
	return out, nil
}
