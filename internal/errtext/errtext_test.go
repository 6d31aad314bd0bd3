package errtext

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"unicode/utf8"

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

var (
	errsMu    sync.Mutex
	errsTypes = map[string]*symbols.Types{}
)

// strippedErrs reads the types of a stripped build of testdata/errs with
// the given toolchain ("" = local) and extra flags, built once.
func strippedErrs(t testing.TB, toolchain string, flags ...string) *symbols.Types {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not in PATH")
	}
	key := toolchain + fmt.Sprint(flags)
	errsMu.Lock()
	defer errsMu.Unlock()
	if ty, ok := errsTypes[key]; ok {
		return ty
	}
	out := filepath.Join(t.TempDir(), "errs")
	args := append([]string{"build", "-ldflags=-s -w", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = filepath.Join("..", "..", "testdata", "errs")
	tc := "local"
	if toolchain != "" {
		tc = toolchain
	}
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN="+tc, "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	ty, err := symbols.ReadTypes(out)
	if err != nil {
		t.Fatal(err)
	}
	errsTypes[key] = ty
	return ty
}

// TestPlans: the read plans of a real binary follow the fields that hold
// an error's text; Go 1.27 keeps its itabs and types elsewhere (moduledata,
// .go.type sections), and PIE builds relocate the descriptors' pointers.
func TestPlans(t *testing.T) {
	builds := map[string][]string{"local": nil}
	if !testing.Short() {
		builds["go1.27.4"] = []string{"-buildmode=pie"}
		builds["go1.21.13"] = nil
	}
	for tc, flags := range builds {
		t.Run(tc, func(t *testing.T) {
			if tc == "local" {
				tc = ""
			}
			checkPlans(t, strippedErrs(t, tc, flags...))
		})
	}
}

func checkPlans(t *testing.T, ty *symbols.Types) {
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

// FuzzRender renders arbitrary target memory as each of the binary's error
// types: whatever it holds (cycles, wild pointers, huge lengths), the
// renderer must end, within its bounds, without panicking.
func FuzzRender(f *testing.F) {
	f.Add(byte(0), []byte("0123456789abcdef0123456789abcdef0123456789abcdef"))
	f.Add(byte(3), make([]byte, 64))
	f.Fuzz(func(t *testing.T, pick byte, data []byte) {
		ty := strippedErrs(t, "")
		var itabs []symbols.Itab
		for _, it := range ty.Itabs() {
			if in, ok := ty.Lookup(it.Inter); ok && in.Name == "error" {
				itabs = append(itabs, it)
			}
		}
		if len(itabs) == 0 {
			t.Fatal("no error itabs")
		}
		it := itabs[int(pick)%len(itabs)]
		const itab, base = 0x1000, 0x2000
		hdr := make([]byte, 16)
		binary.LittleEndian.PutUint64(hdr[8:], it.Type)
		segs := []uprobe.Segment{{Addr: itab, Bytes: hdr}, {Addr: base, Bytes: data}}
		// Every word of data that points into data is followed, and an
		// itab word points back at the itab: cycles of any shape.
		for i := 0; i+8 <= len(data); i += 8 {
			w := binary.LittleEndian.Uint64(data[i:])
			if w >= base && w < base+uint64(len(data)) {
				segs = append(segs, uprobe.Segment{Addr: w, Bytes: data[w-base:]})
			}
		}
		r := NewRenderer(ty, 0)
		typ, text, _, ok := r.Render(segs, itab, base)
		if !ok || typ == "" || len(text) > maxText || !utf8.ValidString(text) {
			t.Fatalf("Render: %q %q %v", typ, text, ok)
		}
	})
}
