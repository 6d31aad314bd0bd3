package symbols

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// attrGoRuntimeType is DW_AT_go_runtime_type: the address of a DWARF
// type's runtime descriptor.
const attrGoRuntimeType dwarf.Attr = 0x2904

// dwarfRuntimeTypes maps descriptor addresses to DWARF type names. The
// attribute holds an offset from runtime.types (base).
func dwarfRuntimeTypes(t *testing.T, path string, base uint64) map[uint64]string {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	dw, err := ef.DWARF()
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]string{}
	r := dw.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			break
		}
		addr, ok := e.Val(attrGoRuntimeType).(uint64)
		name, _ := e.Val(dwarf.AttrName).(string)
		if ok && addr != 0 && name != "" {
			out[base+addr] = name
		}
	}
	return out
}

// itabType reads the Type word of the itab symbol name (non-PIE: the file
// holds the link-time address).
func itabType(t *testing.T, path, name string) uint64 {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	syms, err := ef.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name != name {
			continue
		}
		for _, sec := range ef.Sections {
			if s.Value >= sec.Addr && s.Value+16 <= sec.Addr+sec.Size && sec.Type == elf.SHT_PROGBITS {
				var w [8]byte
				if _, err := sec.ReadAt(w[:], int64(s.Value-sec.Addr+8)); err != nil {
					t.Fatal(err)
				}
				return binary.LittleEndian.Uint64(w[:])
			}
		}
	}
	t.Fatalf("%s: no itab symbol %s", path, name)
	return 0
}

// reflectName turns a DWARF type name into what reflect.Type.String (and
// the descriptor) says: packages by their last path element, no "noalg."
// marker.
var pkgPathPrefix = regexp.MustCompile(`[A-Za-z0-9_.\-]+/`)

func reflectName(dwarfName string) string {
	return pkgPathPrefix.ReplaceAllString(strings.ReplaceAll(dwarfName, "noalg.", ""), "")
}

// TestTypesAgainstDWARF decodes every descriptor that DWARF points at, in
// several builds, and compares its name with DWARF's; then checks that a
// stripped build of the same program, which has no symtab, decodes the
// same names at the same addresses.
func TestTypesAgainstDWARF(t *testing.T) {
	for _, tc := range []struct{ src, toolchain, flags string }{
		{"fixture", "", ""},
		{"fixture", "", "-buildmode=pie"},
		{"fixture", "go1.22.12", ""},
		{"fixture", "go1.27.4", ""}, // types in a .go.type section of their own
		{"fixture", "go1.27.4", "-buildmode=pie"},
		{"oldfixture", "go1.19.13", ""},
	} {
		t.Run(tc.toolchain+tc.flags, func(t *testing.T) {
			var flags []string
			if tc.flags != "" {
				flags = append(flags, tc.flags)
			}
			path := buildFixture(t, tc.src, tc.toolchain, flags...)
			ty, err := ReadTypes(path)
			if err != nil {
				t.Fatal(err)
			}
			want := dwarfRuntimeTypes(t, path, ty.base)
			same, skipped := 0, 0
			var bad []string
			for addr, name := range want {
				got, ok := ty.Lookup(addr)
				switch {
				case strings.Contains(name, "struct {") || strings.ContainsAny(name, "[·"):
					// DWARF qualifies field names with the package, the
					// runtime keeps full paths in type arguments, and
					// function-local types differ in their suffix.
					skipped++
				case !ok:
					// Old linkers give a few DWARF base types an
					// attribute that points nowhere.
					skipped++
				case got.Name == reflectName(name):
					same++
				default:
					bad = append(bad, fmt.Sprintf("%#x: %q, DWARF says %q", addr, got.Name, name))
				}
			}
			t.Logf("%d names equal DWARF's, %d skipped", same, skipped)
			if len(bad) > 0 || same < 300 || skipped > len(want)/3 {
				t.Errorf("%d equal, %d skipped, %d differ:\n%s", same, skipped, len(bad), strings.Join(bad, "\n"))
			}
			for _, n := range []string{"string", "int", "float64", "error", "*errors.errorString"} {
				found := false
				for addr, name := range want {
					if name == n {
						got, _ := ty.Lookup(addr)
						found = got.Name == n
						break
					}
				}
				if !found {
					t.Errorf("type %s not found or misnamed", n)
				}
			}

			// The stripped twin: the same type data, no symtab. Up to Go
			// 1.26 the types came first in their section, at the same
			// address in both builds; from 1.27 their section follows
			// .rodata, which is a little larger in the twin (its -ldflags
			// are recorded), so compare at the same offset from each base.
			strippedPath := buildFixture(t, tc.src, tc.toolchain, append(flags, "-ldflags=-s -w")...)
			st, err := ReadTypes(strippedPath)
			if err != nil {
				t.Fatal(err)
			}
			for addr := range want {
				a, _ := ty.Lookup(addr)
				b, _ := st.Lookup(addr - ty.base + st.base)
				if a != b {
					t.Fatalf("%#x: stripped build (type base %#x) decodes %+v, with symtab (base %#x) %+v", addr, st.base, b, ty.base, a)
				}
			}
		})
	}
}

// TestTypesKindsAndItabs checks kinds, and that the Type word of an
// error itab names the concrete type.
func TestTypesKindsAndItabs(t *testing.T) {
	path := buildFixture(t, "fixture", "")
	ty, err := ReadTypes(path)
	if err != nil {
		t.Fatal(err)
	}
	want := dwarfRuntimeTypes(t, path, ty.base)
	kinds := map[string]Kind{
		"string": KindString, "int": KindInt, "float64": KindFloat64, "uint8": KindUint8,
		"*errors.errorString": KindPointer, "errors.errorString": KindStruct, "error": KindInterface,
	}
	for addr, name := range want {
		if k, ok := kinds[name]; ok {
			got, _ := ty.Lookup(addr)
			if got.Kind != k {
				t.Errorf("%s: kind %d, want %d", name, got.Kind, k)
			}
			delete(kinds, name)
		}
	}
	for n := range kinds {
		t.Errorf("%s: not in DWARF", n)
	}
	for _, c := range []string{"*errors.errorString"} {
		got, ok := ty.Lookup(itabType(t, path, "go:itab."+c+",error"))
		if !ok || got.Name != c || got.Kind != KindPointer {
			t.Errorf("itab of %s: type %+v %v", c, got, ok)
		}
	}
	// Anything else must be refused without a panic.
	for _, a := range []uint64{0, 1, ty.base - 1, ty.base + uint64(len(ty.data)) - 1, ty.base + uint64(len(ty.data)), ^uint64(0)} {
		if got, ok := ty.Lookup(a); ok && a < ty.base+uint64(len(ty.data))-typeHeaderSize {
			t.Logf("%#x decodes as %+v", a, got)
		} else if ok {
			t.Errorf("%#x: decoded %+v past the type data", a, got)
		}
	}
	var nilTypes *Types
	if _, ok := nilTypes.Lookup(ty.base); ok {
		t.Error("nil Types decoded something")
	}
}

// FuzzTypesLookup feeds Lookup arbitrary addresses over real type data.
func FuzzTypesLookup(f *testing.F) {
	path := buildFixture(f, "fixture", "")
	ty, err := ReadTypes(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint64(0))
	f.Add(ty.base)
	f.Fuzz(func(t *testing.T, off uint64) {
		ty.Lookup(ty.base + off%uint64(len(ty.data)+64))
	})
}
