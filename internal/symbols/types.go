package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
)

// Kind is a runtime type's kind, as stored in its descriptor
// (internal/abi.Kind; the numbering has not changed since Go 1.0).
type Kind uint8

// The kinds a panic value is formatted by.
const (
	KindInvalid Kind = iota
	KindBool
	KindInt
	KindInt8
	KindInt16
	KindInt32
	KindInt64
	KindUint
	KindUint8
	KindUint16
	KindUint32
	KindUint64
	KindUintptr
	KindFloat32
	KindFloat64
	KindComplex64
	KindComplex128
	KindArray
	KindChan
	KindFunc
	KindInterface
	KindMap
	KindPointer
	KindSlice
	KindString
	KindStruct
	KindUnsafePointer
)

// Type is a runtime type descriptor (what an interface's type word, or an
// itab's Type field, points at).
type Type struct {
	Name string // as reflect.Type.String: "string", "*errors.errorString", "main.MyErr"
	Kind Kind
	Size uint64
}

// Types reads runtime type descriptors out of a Go executable's file, by
// their link-time address.
//
// Go 1.18+ linkers no longer put a type:<name> (or type.<name>) symbol per
// type in .symtab: there is only runtime.types ("type:*"), the base of the
// type data. So names are decoded from the descriptors themselves, as the
// runtime does: the descriptor's Str field is an offset from that base to
// an encoded name. The base is the runtime.types symbol when there is a
// symtab, and otherwise the start of the section the linker puts the types
// first in (Go 1.27's own .go.type, or .data.rel.ro.go.type in PIE builds;
// before 1.27, .data.rel.ro when the binary has one, as PIE binaries do,
// else .rodata), so a stripped binary's types are named too.
//
// A Types is safe for concurrent use.
type Types struct {
	base uint64 // vaddr of runtime.types
	data []byte // bytes of the section that starts at base
	img  image  // the whole file, for descriptors' pointers (typedesc.go)
	// textStart is runtime.text, the base of methods' code offsets.
	textStart            uint64
	itablinks, typelinks []uint64
	mu                   sync.Mutex
	memo                 map[uint64]Type
	desc                 map[uint64]*TypeDesc
}

// Layout of the descriptor header (internal/abi.Type) on 64-bit targets,
// the same from Go 1.14 to 1.27: Size_ 0, PtrBytes 8, Hash 16, TFlag 20,
// Align_ 21, FieldAlign_ 22, Kind_ 23, Equal 24, GCData 32, Str 40,
// PtrToThis 44.
const (
	typeHeaderSize = 48
	offTFlag       = 20
	offKind        = 23
	offStr         = 40
	tflagExtraStar = 1 << 1
	kindMask       = 1<<5 - 1
)

// ReadTypes reads the type data of the Go executable at path. The file is
// read into memory: it may go away afterwards.
func ReadTypes(path string) (*Types, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read types of %s: %w", path, err)
	}
	t, err := readTypesBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("read types of %s: %w", path, err)
	}
	return t, nil
}

func readTypesBytes(raw []byte) (t *Types, err error) {
	var ef *elf.File
	if err := safely("parse elf", func() (err error) {
		ef, err = elf.NewFile(bytes.NewReader(raw))
		return err
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotELF, err)
	}
	if ef.Class != elf.ELFCLASS64 || ef.Data != elf.ELFDATA2LSB {
		return nil, fmt.Errorf("%w: %v %v", ErrUnsupportedArch, ef.Class, ef.Data)
	}
	// The type data starts at runtime.types. Without a symtab, it is the
	// start of the section the linker puts the types first in: Go 1.27
	// gives them a section of their own (.go.type, or
	// .data.rel.ro.go.type in a PIE); before, .data.rel.ro when the binary
	// has one, as PIE binaries do, else .rodata.
	var sect *elf.Section
	for _, name := range []string{".go.type", ".data.rel.ro.go.type", ".data.rel.ro", ".rodata"} {
		if s := ef.Section(name); s != nil && s.Type == elf.SHT_PROGBITS {
			sect = s
			break
		}
	}
	if sect == nil {
		return nil, fmt.Errorf("no .rodata or .data.rel.ro section")
	}
	base := sect.Addr
	var textStart uint64
	if s := ef.Section(".text"); s != nil {
		textStart = s.Addr
	}
	syms, _ := ef.Symbols()
	if len(syms) > 0 {
		for _, s := range syms {
			switch s.Name {
			case "runtime.types":
				base = s.Value
			case "runtime.text":
				textStart = s.Value
			}
		}
	}
	if base < sect.Addr || base-sect.Addr >= sect.Size {
		// runtime.types names the section.
		for _, s := range ef.Sections {
			if s.Type == elf.SHT_PROGBITS && base >= s.Addr && base-s.Addr < s.Size {
				sect = s
				break
			}
		}
	}
	if base < sect.Addr || base-sect.Addr >= sect.Size {
		return nil, fmt.Errorf("runtime.types at %#x is not in %s", base, sect.Name)
	}
	if sect.Offset > uint64(len(raw)) || sect.Size > uint64(len(raw))-sect.Offset {
		return nil, fmt.Errorf("%w: section %s exceeds the file", ErrNotELF, sect.Name)
	}
	lo := sect.Offset + (base - sect.Addr)
	data := raw[lo : sect.Offset+sect.Size]
	t = &Types{base: base, data: data, img: newImage(ef, raw), textStart: textStart, memo: map[uint64]Type{}, desc: map[uint64]*TypeDesc{}}
	t.readLinks(ef)
	if len(t.itablinks) == 0 {
		// Go 1.27+: the itabs are found through moduledata.
		if tab, tabAddr, err := findPclntab(ef, raw, syms); err == nil {
			if md, word, ok := findModuledata(ef, raw, tab, tabAddr); ok {
				t.itabsFromModuledata(md, word)
			}
		}
	}
	return t, nil
}

// Lookup decodes the descriptor at the link-time address addr (a PIE
// target's runtime address less its load bias). It reports false when addr
// is not inside the type data or what is there does not decode as a
// descriptor with a name.
func (t *Types) Lookup(addr uint64) (Type, bool) {
	if t == nil || addr < t.base {
		return Type{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if ty, ok := t.memo[addr]; ok {
		return ty, ty.Name != ""
	}
	ty := t.decode(addr - t.base)
	if len(t.memo) < 1<<16 {
		t.memo[addr] = ty
	}
	return ty, ty.Name != ""
}

func (t *Types) decode(off uint64) Type {
	if off > uint64(len(t.data)) || uint64(len(t.data))-off < typeHeaderSize {
		return Type{}
	}
	h := t.data[off : off+typeHeaderSize]
	ty := Type{
		Kind: Kind(h[offKind] & kindMask),
		Size: binary.LittleEndian.Uint64(h),
	}
	if ty.Kind == KindInvalid || ty.Kind > KindUnsafePointer {
		return Type{}
	}
	name, ok := t.name(uint64(int64(int32(binary.LittleEndian.Uint32(h[offStr:])))))
	if !ok || name == "" {
		return Type{}
	}
	if h[offTFlag]&tflagExtraStar != 0 && len(name) > 1 && name[0] == '*' {
		name = name[1:]
	}
	ty.Name = name
	return ty
}

// name decodes an internal/abi.Name at off from the base (Go 1.17+ layout:
// a flags byte, the length as a uvarint, the bytes).
func (t *Types) name(off uint64) (string, bool) {
	if off >= uint64(len(t.data)) {
		return "", false
	}
	b := t.data[off+1:]
	n, w := binary.Uvarint(b)
	if w <= 0 || n > 1<<12 || n > uint64(len(b)-w) {
		return "", false
	}
	return string(b[w : w+int(n)]), true
}
