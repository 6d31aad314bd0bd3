package errtext

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

func TestIPString(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "::1", "fe80::1", "2001:db8::8a2e:370:7334", "2001:db8:0:1:1:1:1:1", "::ffff:1.2.3.4", "1::", "::"} {
		ip := net.ParseIP(s)
		for _, b := range [][]byte{ip, ip.To4()} {
			if b == nil {
				continue
			}
			if got, want := ipString(b), net.IP(b).String(); got != want {
				t.Errorf("ipString(%v) = %q, want %q", []byte(b), got, want)
			}
		}
	}
}

// TestPlans: the read plans of a real binary follow the fields that hold
// an error's text.
func TestPlans(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not in PATH")
	}
	out := filepath.Join(t.TempDir(), "errs")
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = filepath.Join("..", "..", "testdata", "errs")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	ty, err := symbols.ReadTypes(out)
	if err != nil {
		t.Fatal(err)
	}
	const bias = 0x1000
	plans := Plans(ty, bias)
	byName := map[string]uprobe.ErrTextNode{}
	for addr, n := range plans {
		if d, ok := ty.Lookup(addr - bias); ok {
			byName[d.Name] = n
		}
	}
	pe, ok := byName["fs.PathError"]
	if !ok {
		t.Fatalf("no plan for fs.PathError among %d", len(plans))
	}
	want := []uprobe.ErrTextField{{Off: 0, Kind: uprobe.ErrTextStr}, {Off: 16, Kind: uprobe.ErrTextStr}, {Off: 32, Kind: uprobe.ErrTextIface}}
	if pe.Size != 48 || len(pe.Fields) != len(want) {
		t.Fatalf("fs.PathError plan %+v", pe)
	}
	for i, f := range want {
		if pe.Fields[i] != f {
			t.Errorf("fs.PathError field %d: %+v, want %+v", i, pe.Fields[i], f)
		}
	}
	if p := byName["*fs.PathError"]; !p.Direct || p.Elem-bias == 0 {
		t.Errorf("*fs.PathError plan %+v", p)
	}
	if _, ok := byName["net.TCPAddr"]; !ok {
		t.Error("no plan for net.TCPAddr, which a *net.OpError's Addr holds")
	}
}
