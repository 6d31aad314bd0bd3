// Package config owns the config file of `obs-agent daemon`: its format
// (YAML, decoded strictly: a key the daemon does not know is an error, not
// a silently ignored typo), the default of every key, and the checks on
// every value. The checks are the command-line flags' own (the ranges in
// internal/validate, the pattern parser of internal/selector, the listen
// address rules of internal/ui and internal/validate), so a value refused
// by `attach` is refused here too, and every error names the key as
// written in the file (`limits.memory_mib`, `targets[1].include[0]`).
//
// docs/config.md is the reference of every key; deploy/obs-agent.yaml is
// an example that the tests load.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/obs-agent/obs-agent/internal/agent"
	"github.com/obs-agent/obs-agent/internal/otlp"
	"github.com/obs-agent/obs-agent/internal/safefile"
	"github.com/obs-agent/obs-agent/internal/selector"
	"github.com/obs-agent/obs-agent/internal/store"
	"github.com/obs-agent/obs-agent/internal/ui"
	"github.com/obs-agent/obs-agent/internal/validate"
)

// Config is one config file. Its zero value is not valid: Default gives
// the defaults that Parse starts from.
type Config struct {
	Targets []Target `yaml:"targets"`
	Store   Store    `yaml:"store"`
	Limits  Limits   `yaml:"limits"`
	UI      UI       `yaml:"ui"`
	Metrics Metrics  `yaml:"metrics"`
	OTLP    OTLP     `yaml:"otlp"`
}

// Target is one thing to trace: exactly one of Exe, PID and Cgroup, with
// the functions to trace in it.
type Target struct {
	// Exe is an executable file: every process running it, now or later
	// (attach --exe).
	Exe string `yaml:"exe"`
	// PID is one running process (attach --pid).
	PID int `yaml:"pid"`
	// Cgroup is a cgroup v2 directory: its processes, new ones included.
	Cgroup string `yaml:"cgroup"`
	// Include and Exclude are the -f and -x patterns; an include may end
	// in @RATE.
	Include []string `yaml:"include"`
	Exclude []string `yaml:"exclude"`
	// Sample is --sample, the share of ok calls kept for patterns without
	// @RATE; nil means 1 (every call).
	Sample *float64 `yaml:"sample"`
}

// Store is where records go and how long they stay.
type Store struct {
	DB            string        `yaml:"db"`
	SpillDir      string        `yaml:"spill_dir"`
	Group         string        `yaml:"group"`
	Retention     time.Duration `yaml:"retention"`
	Archive       string        `yaml:"archive"`
	StatsInterval time.Duration `yaml:"stats_interval"`
}

// Limits bound what the agent may cost.
type Limits struct {
	MemoryMiB      int           `yaml:"memory_mib"`
	QueueMemoryMiB int           `yaml:"queue_memory_mib"`
	MaxProbes      int           `yaml:"max_probes"`
	MaxOverhead    float64       `yaml:"max_overhead"`
	SingleProbes   bool          `yaml:"single_probes"`
	SampleInterval time.Duration `yaml:"sample_interval"`
	// ReloadTargets is how many targets a reload may add in place: the
	// memory budget reserves a tracer for each at start.
	ReloadTargets int `yaml:"reload_targets"`
}

// DefaultReloadTargets is limits.reload_targets' default: one target a
// reload may add in place; MaxReloadTargets its largest value (each
// reserved tracer takes its share of the rings, maps and programs).
const (
	DefaultReloadTargets = 1
	MaxReloadTargets     = 16
)

// UI is the web UI served while the daemon runs.
type UI struct {
	Listen      string `yaml:"listen"`
	AllowRemote bool   `yaml:"allow_remote"`
	// URLFile receives the UI's URL with its access token (0600); ""
	// means ui.url beside the store.
	URLFile string `yaml:"url_file"`
}

// Metrics is the Prometheus endpoint.
type Metrics struct {
	Listen string `yaml:"listen"`
}

// OTLP is the live OTLP/HTTP span exporter. Unlike attach and run, the
// daemon reads no OTEL_* variable: the file is the whole configuration.
type OTLP struct {
	Endpoint    string            `yaml:"endpoint"`
	Headers     map[string]string `yaml:"headers"`
	CAFile      string            `yaml:"ca_file"`
	ServiceName string            `yaml:"service_name"`
	Compression string            `yaml:"compression"`
}

// Default is the configuration of a file that sets nothing but targets.
func Default() Config {
	return Config{
		Store: Store{
			DB:            store.DefaultPath(),
			Retention:     6 * time.Hour,
			StatsInterval: time.Minute,
		},
		Limits: Limits{
			MemoryMiB:      int(agent.DefaultMemoryLimit >> 20),
			MaxProbes:      selector.DefaultMaxProbes,
			SampleInterval: 5 * time.Second,
			ReloadTargets:  DefaultReloadTargets,
		},
	}
}

// maxFileSize bounds the config file: a config is a few kilobytes, and a
// root daemon should not read a device or a huge file by mistake.
const maxFileSize = 1 << 20

// Load reads, decodes and checks the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("config %s: not a regular file", validate.Clip(path))
	}
	if err := checkOwner(f); err != nil {
		return nil, fmt.Errorf("config %s: %w", validate.Clip(path), err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", validate.Clip(path), err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("config %s: larger than %d bytes", validate.Clip(path), maxFileSize)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", validate.Clip(path), err)
	}
	return c, nil
}

// checkOwner refuses, for a daemon running as root, a config file that
// another user could have written: the file names paths root writes to
// (the store, the UI's url file, archives) and binaries it reads, so
// whoever can change it could make the daemon overwrite a file of the
// host. The file and every directory above it (links resolved) must
// belong to root and be writable by no one else, except a sticky
// directory (a Kubernetes ConfigMap volume's root is one).
func checkOwner(f *os.File) error {
	if os.Geteuid() != 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Uid != 0 || st.Mode&0o022 != 0 {
		return fmt.Errorf("the file is owned by uid %d with mode %04o: a root daemon takes paths it writes from it, so it must be root's and writable by root alone (chown root; chmod go-w)", st.Uid, st.Mode&0o7777)
	}
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return err
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		if err := unix.Stat(dir, &st); err != nil {
			return err
		}
		if st.Uid != 0 || (st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0) {
			return fmt.Errorf("directory %s is owned by uid %d with mode %04o: another user could replace the config in it; keep it in a directory only root can write", dir, st.Uid, st.Mode&0o7777)
		}
		if dir == "/" {
			return nil
		}
	}
}

// Parse decodes a config over the defaults and checks it.
func Parse(data []byte) (*Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty: it needs at least a targets list")
		}
		return nil, friendlier(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document (---): put everything in one")
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// sections names the key each type is decoded from, for errors.
var sections = map[string]string{
	"config.Config": "the top level", "config.Target": "a target", "config.Store": "store",
	"config.Limits": "limits", "config.UI": "ui", "config.Metrics": "metrics", "config.OTLP": "otlp",
}

// unknownField is yaml.v3's message for a key that is not in the struct.
var unknownField = regexp.MustCompile(`field (\S+) not found in type (\S+)`)

// friendlier says "unknown key" and names the section instead of a Go
// type, and points at the reference.
func friendlier(err error) error {
	msg := unknownField.ReplaceAllStringFunc(err.Error(), func(m string) string {
		sub := unknownField.FindStringSubmatch(m)
		where := sections[sub[2]]
		if where == "" {
			where = sub[2]
		}
		return fmt.Sprintf("unknown key %q in %s (docs/config.md lists every key)", sub[1], where)
	})
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}

// Check checks every value; the first error is returned, naming its key.
func (c *Config) Check() error {
	if len(c.Targets) == 0 {
		return errors.New("targets: no target: give at least one, e.g. targets: [{exe: /srv/api/bin/api, include: ['main.*']}]")
	}
	for i := range c.Targets {
		if err := c.Targets[i].check(fmt.Sprintf("targets[%d]", i)); err != nil {
			return err
		}
	}
	return validate.First(c.Store.check(), c.Limits.check(), c.UI.check(), c.Metrics.check(), c.OTLP.check())
}

func (t *Target) check(key string) error {
	n := 0
	for _, set := range []bool{t.Exe != "", t.PID != 0, t.Cgroup != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%s: give exactly one of exe (every process of a file), pid (one process) and cgroup (the processes of a cgroup v2)", key)
	}
	if len(t.Include) == 0 {
		return fmt.Errorf("%s.include: no pattern: give at least one, e.g. include: ['main.*']", key)
	}
	for i, p := range t.Include {
		if _, _, err := selector.ParsePatterns([]string{p}, nil); err != nil {
			return fmt.Errorf("%s.include[%d]: %w", key, i, err)
		}
	}
	for i, p := range t.Exclude {
		if _, _, err := selector.ParsePatterns(nil, []string{p}); err != nil {
			return fmt.Errorf("%s.exclude[%d]: %w", key, i, err)
		}
	}
	var sample error
	if t.Sample != nil {
		sample = validate.Rate.Check(key+".sample", *t.Sample)
	}
	return validate.First(
		absPath(key+".exe", t.Exe),
		absPath(key+".cgroup", t.Cgroup),
		validate.Range[int]{Min: 1, Max: 1 << 22}.Check(key+".pid", orOne(t.PID)),
		sample,
	)
}

// SampleRate is Sample with its default.
func (t *Target) SampleRate() float64 {
	if t.Sample == nil {
		return 1
	}
	return *t.Sample
}

// orOne maps an unset (0) pid to a valid one, so the range check only
// judges a pid that was given.
func orOne(pid int) int {
	if pid == 0 {
		return 1
	}
	return pid
}

// absPath refuses a relative path: the daemon runs from /, and a path
// that means one file in a shell and another under systemd is a trap.
func absPath(key, p string) error {
	if p != "" && !filepath.IsAbs(p) {
		return fmt.Errorf("%s %s: give an absolute path (the daemon does not resolve paths against its working directory)", key, validate.Quote(p))
	}
	return nil
}

func (s *Store) check() error {
	if s.DB == "" {
		return errors.New("store.db is empty: give the store's path, or leave the key out for the default " + store.DefaultPath())
	}
	var group error
	if s.Group != "" {
		if _, err := safefile.LookupGroup(s.Group); err != nil {
			group = fmt.Errorf("store.group: %w", err)
		}
	}
	var archive error
	if s.Archive != "" {
		if err := safefile.CheckDir(s.Archive); err != nil {
			archive = fmt.Errorf("store.archive %s: %w", validate.Clip(s.Archive), err)
		} else {
			archive = validate.WritableDir("store.archive", s.Archive)
		}
	}
	return validate.First(
		absPath("store.db", s.DB),
		absPath("store.spill_dir", s.SpillDir),
		absPath("store.archive", s.Archive),
		validate.Retention.Check("store.retention", s.Retention),
		validate.StatsInterval.Check("store.stats_interval", s.StatsInterval),
		group,
		archive,
	)
}

func (l *Limits) check() error {
	mem := validate.Range[int]{Min: int(agent.MinMemoryLimit >> 20), Max: validate.MaxMemoryMiB}
	if err := mem.Check("limits.memory_mib", l.MemoryMiB); err != nil {
		return err
	}
	// The ok lane is one part of the memory limit: it can't take all of it.
	queue := validate.Range[int]{Min: 1, Max: l.MemoryMiB - 1, Special: []validate.Special[int]{{Value: 0, Means: "the ok lane's share of limits.memory_mib"}}}
	return validate.First(
		queue.Check("limits.queue_memory_mib", l.QueueMemoryMiB),
		validate.MaxProbes.Check("limits.max_probes", l.MaxProbes),
		validate.Overhead().Check("limits.max_overhead", l.MaxOverhead),
		validate.SampleInterval.Check("limits.sample_interval", l.SampleInterval),
		validate.Range[int]{Min: 0, Max: MaxReloadTargets}.Check("limits.reload_targets", l.ReloadTargets),
	)
}

func (u *UI) check() error {
	if u.Listen == "" {
		if u.AllowRemote || u.URLFile != "" {
			return errors.New("ui.allow_remote and ui.url_file need ui.listen: give the address to serve the UI on, e.g. 127.0.0.1:7070")
		}
		return nil
	}
	return validate.First(ui.CheckListen("ui.listen", u.Listen, u.AllowRemote), absPath("ui.url_file", u.URLFile))
}

func (m *Metrics) check() error {
	if m.Listen == "" {
		return nil
	}
	_, err := validate.ListenAddr("metrics.listen", m.Listen)
	return err
}

// Addr is the address to listen on ("" when off).
func (m *Metrics) Addr() string {
	if m.Listen == "" {
		return ""
	}
	a, _ := validate.ListenAddr("metrics.listen", m.Listen) // checked by Load
	return a
}

func (o *OTLP) check() error {
	if o.Endpoint == "" {
		if len(o.Headers) > 0 || o.CAFile != "" || o.ServiceName != "" || o.Compression != "" {
			return errors.New("otlp.headers, otlp.ca_file, otlp.service_name and otlp.compression need otlp.endpoint: give the collector's URL, e.g. http://collector:4318")
		}
		return nil
	}
	for k, v := range o.Headers {
		if _, _, err := otlp.ParseHeader(k+"="+v, false); err != nil {
			return fmt.Errorf("otlp.headers: %w", err)
		}
	}
	if err := absPath("otlp.ca_file", o.CAFile); err != nil {
		return err
	}
	_, err := o.Exporter("")
	return err
}

// Exporter is the OTLP exporter's configuration, nil when off; the
// exporter is built once here so that a bad CA file fails the load, not
// the first export.
func (o *OTLP) Exporter(userAgent string) (*otlp.Config, error) {
	if o.Endpoint == "" {
		return nil, nil
	}
	url, err := otlp.EndpointURL(o.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("otlp.endpoint: %w", err)
	}
	comp, err := otlp.ParseCompression(o.Compression)
	if err != nil {
		return nil, fmt.Errorf("otlp.compression: %w", err)
	}
	cfg := otlp.Config{Endpoint: url, Headers: o.Headers, CAFile: o.CAFile, UserAgent: userAgent, Compression: comp}
	exp, err := otlp.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("otlp: %w", err)
	}
	exp.Close()
	return &cfg, nil
}
