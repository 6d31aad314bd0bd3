package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/obs-agent/obs-agent/internal/store"
)

// TestExampleConfig loads the example that deploy/ ships and `make
// install` installs, so it can never drift from what the daemon accepts.
func TestExampleConfig(t *testing.T) {
	// Parse, not Load: as root, Load refuses a file of another user, and
	// `sudo make test` runs in a checkout that may be a user's.
	data, err := os.ReadFile("../../deploy/obs-agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Targets) != 1 || c.Targets[0].Exe != "/usr/local/bin/api" || len(c.Targets[0].Include) != 2 {
		t.Errorf("targets: %+v", c.Targets)
	}
	if c.Limits.MaxOverhead != 0.05 || c.Store.Retention != 6*time.Hour || c.Store.DB != "/var/lib/obs-agent/obs.db" {
		t.Errorf("store %+v, limits %+v", c.Store, c.Limits)
	}
}

// TestDefaults: a file with only a target gets every documented default.
func TestDefaults(t *testing.T) {
	c, err := Parse([]byte("targets:\n  - exe: /bin/x\n    include: ['main.*']\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Targets: []Target{{Exe: "/bin/x", Include: []string{"main.*"}}},
		Store:   Store{DB: store.DefaultPath(), Retention: 6 * time.Hour, StatsInterval: time.Minute},
		Limits:  Limits{MemoryMiB: 160, MaxProbes: 10000, SampleInterval: 5 * time.Second, ReloadTargets: 1},
	}
	if got := *c; !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
	if r := c.Targets[0].SampleRate(); r != 1 {
		t.Errorf("default sample rate %v, want 1", r)
	}
	// An explicit zero is kept, not replaced by the default.
	c, err = Parse([]byte("targets: [{exe: /bin/x, include: ['main.*'], sample: 0}]\nlimits: {sample_interval: 0s, reload_targets: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Targets[0].SampleRate(); r != 0 || c.Limits.SampleInterval != 0 || c.Limits.ReloadTargets != 0 {
		t.Errorf("explicit zeros lost: sample %v, sample_interval %v", r, c.Limits.SampleInterval)
	}
}

// TestRejected: each bad file is refused with an error that names the key
// and says what is wanted.
func TestRejected(t *testing.T) {
	const target = "targets: [{exe: /bin/x, include: ['main.*']}]\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown top key", target + "stroe: {db: /x}\n", []string{`unknown key "stroe" in the top level`}},
		{"unknown nested key", target + "store: {retension: 2h}\n", []string{`line 2: unknown key "retension" in store`}},
		{"unknown target key", "targets: [{exe: /bin/x, include: ['main.*'], func: ['x']}]\n", []string{`unknown key "func" in a target`}},
		{"empty", "", []string{"empty"}},
		{"two documents", target + "---\n" + target, []string{"more than one YAML document"}},
		{"no targets", "store: {db: /x.db}\n", []string{"targets: no target"}},
		{"two kinds", "targets: [{exe: /bin/x, pid: 3, include: ['main.*']}]\n", []string{"targets[0]: give exactly one of exe"}},
		{"no kind", "targets: [{include: ['main.*']}]\n", []string{"targets[0]: give exactly one of exe"}},
		{"no include", "targets: [{exe: /bin/x}]\n", []string{"targets[0].include: no pattern"}},
		{"relative exe", "targets: [{exe: bin/x, include: ['main.*']}]\n", []string{"targets[0].exe", "absolute path"}},
		{"duplicate key", target + target, []string{"\"targets\" already defined"}},
		{"bad rate", "targets: [{exe: /bin/x, include: ['main.*@2']}]\n", []string{"targets[0].include[0]"}},
		{"rate on exclude", "targets: [{exe: /bin/x, include: ['main.*'], exclude: ['x@0.5']}]\n", []string{"targets[0].exclude[0]", "sample rate"}},
		{"sample range", "targets: [{exe: /bin/x, include: ['main.*'], sample: 1.5}]\n", []string{"targets[0].sample 1.5 is out of range: want from 0 to 1"}},
		{"pid range", "targets: [{pid: -4, include: ['main.*']}]\n", []string{"targets[0].pid -4 is out of range"}},
		{"retention", target + "store: {retention: 30m}\n", []string{"store.retention 30m is out of range: want at least 1h"}},
		{"retention as int", target + "store: {retention: 3600}\n", []string{"time.Duration"}},
		{"stats interval", target + "store: {stats_interval: 2h}\n", []string{"store.stats_interval 2h is out of range: want from 1s to 1h"}},
		{"relative db", target + "store: {db: obs.db}\n", []string{"store.db", "absolute path"}},
		{"empty db", target + "store: {db: ''}\n", []string{"store.db is empty"}},
		{"no such group", target + "store: {group: no-such-group-xyz}\n", []string{"store.group"}},
		{"memory", target + "limits: {memory_mib: 10}\n", []string{"limits.memory_mib 10 is out of range: want from 64 to 1048576"}},
		{"queue memory", target + "limits: {memory_mib: 100, queue_memory_mib: 100}\n", []string{"limits.queue_memory_mib 100 is out of range", "to 99"}},
		{"max probes", target + "limits: {max_probes: 0}\n", []string{"limits.max_probes 0 is out of range: want -1 (no limit), or at least 1"}},
		{"overhead", target + "limits: {max_overhead: -1}\n", []string{"limits.max_overhead -1 is out of range"}},
		{"reload targets", target + "limits: {reload_targets: 17}\n", []string{"limits.reload_targets 17 is out of range: want from 0 to 16"}},
		{"reload targets below", target + "limits: {reload_targets: -1}\n", []string{"limits.reload_targets -1 is out of range"}},
		{"sample interval", target + "limits: {sample_interval: 10ms}\n", []string{"limits.sample_interval 10ms is out of range"}},
		{"ui remote", target + "ui: {listen: '0.0.0.0:7070'}\n", []string{"ui.listen \"0.0.0.0:7070\" is not a loopback address", "ui.allow_remote"}},
		{"ui syntax", target + "ui: {listen: '7070'}\n", []string{"ui.listen \"7070\": want HOST:PORT"}},
		{"ui key without listen", target + "ui: {allow_remote: true}\n", []string{"need ui.listen"}},
		{"metrics port", target + "metrics: {listen: '70000'}\n", []string{"metrics.listen 70000 is out of range: want from 1 to 65535"}},
		{"metrics host name", target + "metrics: {listen: 'example.com:9464'}\n", []string{"metrics.listen \"example.com:9464\": want PORT"}},
		{"otlp url", target + "otlp: {endpoint: 'ftp://x'}\n", []string{"otlp.endpoint"}},
		{"otlp header", target + "otlp: {endpoint: 'http://c:4318', headers: {'bad key': v}}\n", []string{"otlp.headers"}},
		{"otlp without endpoint", target + "otlp: {service_name: api}\n", []string{"need otlp.endpoint"}},
		{"otlp compression", target + "otlp: {endpoint: 'http://c:4318', compression: zstd}\n", []string{"otlp.compression", "want gzip or none"}},
		{"otlp ca", target + "otlp: {endpoint: 'https://c:4318', ca_file: /no/such.pem}\n", []string{"otlp", "/no/such.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestLoadFile: the file's path is in every error, and what is not a
// regular file is refused before it is read.
func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte("targets: [{exe: /bin/x, include: ['main.*']}]\nlimits: {memory_mib: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "config "+p+": limits.memory_mib 1") {
		t.Errorf("Load: %v", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load(dir): %v", err)
	}
	if _, err := Load(filepath.Join(dir, "none.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Load(missing): %v", err)
	}
}

// TestLoadForeignFile: as root, a config another user could have written
// is refused (it names the paths root writes to).
func TestLoadForeignFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the owner check applies to a daemon running as root")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte("targets: [{exe: /bin/x, include: ['main.*']}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Fatalf("root's own 0600 file: %v", err)
	}
	os.Chmod(p, 0o666)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "mode 0666") {
		t.Errorf("0666 file: %v", err)
	}
	os.Chmod(p, 0o644)
	os.Chown(p, 65534, 65534)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("file of uid 65534: %v", err)
	}
	os.Chown(p, 0, 0)
	sub := filepath.Join(dir, "open")
	os.Mkdir(sub, 0o777)
	os.Chmod(sub, 0o777) // past the umask
	q := filepath.Join(sub, "c.yaml")
	os.Rename(p, q)
	if _, err := Load(q); err == nil || !strings.Contains(err.Error(), "directory "+sub) {
		t.Errorf("file in a world-writable directory: %v", err)
	}
	// A link to the file from such a directory does not hide where it is.
	os.Rename(q, p)
	link := filepath.Join(sub, "link.yaml")
	os.Symlink(p, link)
	if _, err := Load(link); err != nil {
		t.Errorf("a link to root's file: %v", err)
	}
}

// TestDaemonSetConfig loads the config that the Kubernetes example's
// ConfigMap carries (deploy/kubernetes/check validates the rest).
func TestDaemonSetConfig(t *testing.T) {
	data, err := os.ReadFile("../../deploy/kubernetes/obs-agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	found := false
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc.Kind != "ConfigMap" {
			continue
		}
		found = true
		c, err := Parse([]byte(doc.Data["obs-agent.yaml"]))
		if err != nil {
			t.Fatalf("the ConfigMap's obs-agent.yaml: %v", err)
		}
		if c.Store.DB != "/var/lib/obs-agent/obs.db" || c.Metrics.Addr() != "0.0.0.0:9464" {
			t.Errorf("store %+v, metrics %+v", c.Store, c.Metrics)
		}
	}
	if !found {
		t.Fatal("no ConfigMap in the Kubernetes example")
	}
}
