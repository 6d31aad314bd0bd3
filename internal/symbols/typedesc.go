package symbols

import (
	"debug/elf"
	"encoding/binary"
	"strings"
)

// This file decodes the rest of a runtime type descriptor
// (internal/abi.Type and the kind-specific structs that follow it): struct
// fields, element types, interface and uncommon methods, function
// signatures, and the itabs of the binary. Stripped binaries keep all of
// it, since the runtime needs it for reflection, interface conversions and
// printing. The layouts below are the 64-bit ones of Go 1.17 through 1.27
// (checked against the internal/abi sources of 1.21–1.27; maps are not
// decoded, their layout changed in 1.24).

// image reads the loaded bytes of an ELF file by virtual address. Pointer
// words in a PIE binary's .data.rel.ro are zero in the file and filled at
// load time by R_*_RELATIVE relocations, whose addends are the pointers'
// link-time values.
type image struct {
	progs  []elf.ProgHeader
	raw    []byte
	relocs map[uint64]uint64
}

func newImage(ef *elf.File, raw []byte) image {
	im := image{raw: raw}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD {
			im.progs = append(im.progs, p.ProgHeader)
		}
	}
	if ef.Type == elf.ET_DYN {
		im.relocs = relativeRelocs(ef, raw)
	}
	return im
}

// bytes returns n bytes at vaddr, or false when they are not all in the
// file part of one loaded segment.
func (im *image) bytes(vaddr, n uint64) ([]byte, bool) {
	for _, p := range im.progs {
		if vaddr < p.Vaddr || vaddr-p.Vaddr >= p.Filesz {
			continue
		}
		off := vaddr - p.Vaddr
		if n > p.Filesz-off || p.Off+off+n > uint64(len(im.raw)) {
			return nil, false
		}
		return im.raw[p.Off+off : p.Off+off+n], true
	}
	return nil, false
}

// word reads a pointer-sized word at vaddr, relocated.
func (im *image) word(vaddr uint64) (uint64, bool) {
	b, ok := im.bytes(vaddr, 8)
	if !ok {
		return 0, false
	}
	if v := binary.LittleEndian.Uint64(b); v != 0 || im.relocs == nil {
		return v, true
	}
	return im.relocs[vaddr], true
}

func (im *image) u32(vaddr uint64) (uint32, bool) {
	b, ok := im.bytes(vaddr, 4)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b), true
}

// Field is one field of a struct type.
type Field struct {
	Name     string
	Type     uint64 // descriptor address
	Offset   uint64
	Embedded bool
}

// Method is a method of a type's method set (uncommon type) or of an
// interface.
type Method struct {
	Name string
	Type uint64 // the func type without receiver; 0 when the linker dropped it
	// Ifn and Tfn are the code addresses of the method called through an
	// interface (receiver: one pointer-shaped word) and directly (receiver
	// of the type itself); 0 when the linker dropped them. Interface
	// methods have neither.
	Ifn, Tfn uint64
}

// TypeDesc is a decoded type descriptor.
type TypeDesc struct {
	Addr     uint64
	Name     string // as reflect.Type.String
	Kind     Kind
	Size     uint64
	Align    uint8
	PtrBytes uint64
	Elem     uint64  // pointer, slice, array, chan: the element type
	Len      uint64  // array length
	Fields   []Field // struct
	// Methods: an interface's methods, or a named type's method set.
	Methods []Method
	In, Out []uint64 // func parameter and result types
	// DirectIface: the value itself is an interface's data word (pointer
	// shaped), not what it points to.
	DirectIface bool
}

const (
	tflagUncommon    = 1 << 0
	kindDirectIface  = 1 << 5
	offAlign         = 21
	offPtrBytes      = 8
	uncommonSize     = 16
	maxDescFields    = 1 << 10
	maxDescMethods   = 1 << 12
	maxDescFuncParam = 1 << 8
)

// Desc decodes the descriptor at the link-time address addr, memoized. It
// reports false when the address holds no readable descriptor.
func (t *Types) Desc(addr uint64) (*TypeDesc, bool) {
	if t == nil || addr == 0 {
		return nil, false
	}
	ty, ok := t.Lookup(addr)
	if !ok {
		return nil, false
	}
	t.mu.Lock()
	d, ok := t.desc[addr]
	t.mu.Unlock()
	if ok {
		return d, d != nil
	}
	d = t.decodeDesc(addr, ty)
	t.mu.Lock()
	if len(t.desc) < 1<<16 {
		t.desc[addr] = d
	}
	t.mu.Unlock()
	return d, d != nil
}

func (t *Types) decodeDesc(addr uint64, ty Type) *TypeDesc {
	im := &t.img
	h, ok := im.bytes(addr, typeHeaderSize)
	if !ok {
		return nil
	}
	d := &TypeDesc{
		Addr: addr, Name: ty.Name, Kind: ty.Kind, Size: ty.Size,
		Align:       h[offAlign],
		PtrBytes:    binary.LittleEndian.Uint64(h[offPtrBytes:]),
		DirectIface: h[offKind]&kindDirectIface != 0,
	}
	tflag := h[offTFlag]
	ptr := func(off uint64) uint64 { v, _ := im.word(addr + off); return v }
	extra := uint64(typeHeaderSize) // size of the kind-specific struct
	switch d.Kind {
	case KindPointer, KindSlice:
		d.Elem, extra = ptr(48), 56
	case KindChan:
		d.Elem, extra = ptr(48), 64
	case KindArray:
		d.Elem, d.Len, extra = ptr(48), ptr(64), 72
	case KindStruct:
		extra = 80
		fp, n := ptr(56), ptr(64)
		if n > maxDescFields {
			return nil
		}
		for i := uint64(0); i < n; i++ {
			f := fp + 24*i
			np, _ := im.word(f)
			typ, _ := im.word(f + 8)
			off, _ := im.word(f + 16)
			name, flags, ok := t.nameAt(np)
			if !ok {
				return nil
			}
			d.Fields = append(d.Fields, Field{Name: name, Type: typ, Offset: off, Embedded: flags&(1<<3) != 0})
		}
	case KindInterface:
		extra = 80
		mp, n := ptr(56), ptr(64)
		if n > maxDescMethods {
			return nil
		}
		for i := uint64(0); i < n; i++ {
			nameOff, ok1 := im.u32(mp + 8*i)
			typOff, ok2 := im.u32(mp + 8*i + 4)
			if !ok1 || !ok2 {
				return nil
			}
			m := Method{Name: t.nameOff(int32(nameOff)), Type: t.typeOff(int32(typOff))}
			d.Methods = append(d.Methods, m)
		}
	case KindFunc:
		extra = 56
		b, ok := im.bytes(addr+48, 4)
		if !ok {
			return nil
		}
		in := uint64(binary.LittleEndian.Uint16(b))
		out := uint64(binary.LittleEndian.Uint16(b[2:]) & (1<<15 - 1))
		if in+out > maxDescFuncParam {
			return nil
		}
		params := addr + extra
		if tflag&tflagUncommon != 0 {
			params += uncommonSize
		}
		for i := uint64(0); i < in+out; i++ {
			p := ptr(params - addr + 8*i)
			if i < in {
				d.In = append(d.In, p)
			} else {
				d.Out = append(d.Out, p)
			}
		}
	case KindMap:
		// The map descriptor's size differs across releases: its
		// uncommon methods are not read.
		return d
	}
	if tflag&tflagUncommon != 0 && d.Kind != KindInterface {
		d.Methods = t.uncommonMethods(addr + extra)
	}
	return d
}

// uncommonMethods reads the method set of an uncommon type (internal/abi
// UncommonType: PkgPath int32, Mcount uint16, Xcount uint16, Moff uint32).
func (t *Types) uncommonMethods(u uint64) []Method {
	im := &t.img
	b, ok := im.bytes(u, uncommonSize)
	if !ok {
		return nil
	}
	n := uint64(binary.LittleEndian.Uint16(b[4:]))
	moff := uint64(binary.LittleEndian.Uint32(b[8:]))
	if n > maxDescMethods {
		return nil
	}
	var ms []Method
	for i := uint64(0); i < n; i++ {
		mb, ok := im.bytes(u+moff+16*i, 16)
		if !ok {
			return ms
		}
		m := Method{
			Name: t.nameOff(int32(binary.LittleEndian.Uint32(mb))),
			Type: t.typeOff(int32(binary.LittleEndian.Uint32(mb[4:]))),
			Ifn:  t.textOff(int32(binary.LittleEndian.Uint32(mb[8:]))),
			Tfn:  t.textOff(int32(binary.LittleEndian.Uint32(mb[12:]))),
		}
		ms = append(ms, m)
	}
	return ms
}

// nameOff, typeOff resolve offsets from runtime.types; -1 marks what the
// linker dropped as unreachable.
func (t *Types) nameOff(off int32) string {
	if off < 0 {
		return ""
	}
	n, _ := t.name(uint64(off))
	return n
}

func (t *Types) typeOff(off int32) uint64 {
	if off < 0 {
		return 0
	}
	return t.base + uint64(off)
}

// textOff resolves an offset from runtime.text (single text section; a
// binary with several would need moduledata's textsectmap, and a method
// whose address does not land on a function entry is ignored by callers).
func (t *Types) textOff(off int32) uint64 {
	if off < 0 || t.textStart == 0 {
		return 0
	}
	return t.textStart + uint64(off)
}

// nameAt decodes an internal/abi.Name whose bytes start at vaddr (struct
// field names are pointers, not offsets): flags, uvarint length, bytes.
func (t *Types) nameAt(vaddr uint64) (string, byte, bool) {
	if vaddr == 0 {
		return "", 0, true
	}
	b, ok := t.img.bytes(vaddr, 1+binary.MaxVarintLen16)
	if !ok {
		return "", 0, false
	}
	n, w := binary.Uvarint(b[1:])
	if w <= 0 || n > 1<<12 {
		return "", 0, false
	}
	s, ok := t.img.bytes(vaddr+1+uint64(w), n)
	if !ok {
		return "", 0, false
	}
	return string(s), b[0], true
}

// Itab is an itab of the binary: a (interface, concrete type) pair and the
// code of the concrete type's methods in the interface's method order.
type Itab struct {
	Addr  uint64
	Inter uint64 // interface type descriptor
	Type  uint64 // concrete type descriptor
	Fun   []uint64
}

// Itabs lists every itab the linker built (.itablink, or
// .data.rel.ro.itablink in PIE builds), kept even by -s -w. Itabs made at
// run time (interface-to-interface conversions of a type with no static
// itab) are not in the file.
func (t *Types) Itabs() []Itab {
	if t == nil {
		return nil
	}
	var out []Itab
	for _, l := range t.itablinks {
		inter, ok1 := t.img.word(l)
		typ, ok2 := t.img.word(l + 8)
		if !ok1 || !ok2 {
			continue
		}
		it := Itab{Addr: l, Inter: inter, Type: typ}
		if d, ok := t.Desc(inter); ok && d.Kind == KindInterface {
			for i := range d.Methods {
				f, _ := t.img.word(l + 24 + 8*uint64(i))
				it.Fun = append(it.Fun, f)
			}
		}
		out = append(out, it)
	}
	return out
}

// ErrorItabs maps the address of every static itab for the `error`
// interface to its concrete type's name.
func (t *Types) ErrorItabs() map[uint64]string {
	out := map[uint64]string{}
	for _, it := range t.Itabs() {
		if d, ok := t.Lookup(it.Inter); !ok || d.Name != "error" {
			continue
		}
		if c, ok := t.Lookup(it.Type); ok {
			out[it.Addr] = c.Name
		}
	}
	return out
}

// Typelinks lists the type descriptors in .typelink: the types the
// runtime may need to find by shape (composite types made by reflect).
func (t *Types) Typelinks() []uint64 {
	if t == nil {
		return nil
	}
	return t.typelinks
}

// readLinks reads the .itablink and .typelink sections.
func (t *Types) readLinks(ef *elf.File) {
	for _, s := range ef.Sections {
		switch {
		case strings.HasSuffix(s.Name, ".itablink") && s.Size < 1<<24:
			for off := uint64(0); off+8 <= s.Size; off += 8 {
				if v, ok := t.img.word(s.Addr + off); ok && v != 0 {
					t.itablinks = append(t.itablinks, v)
				}
			}
		case strings.HasSuffix(s.Name, ".typelink") && s.Size < 1<<24:
			for off := uint64(0); off+4 <= s.Size; off += 4 {
				if v, ok := t.img.u32(s.Addr + off); ok {
					t.typelinks = append(t.typelinks, t.base+uint64(int64(int32(v))))
				}
			}
		}
	}
}

// Go 1.27 dropped the .itablink section: the itabs follow the type
// descriptors, at moduledata.types + itaboffset for itabsize bytes
// (moduledata: types 296, typedesclen 304, etypes 312, itaboffset 320,
// itabsize 328 on 64-bit targets).
const (
	md127Types      = 296
	md127Etypes     = 312
	md127ItabOffset = 320
	md127ItabSize   = 328
)

// itabsFromModuledata walks the itabs of a Go 1.27+ moduledata; each is 24
// bytes plus a word per method of its interface (at least one).
func (t *Types) itabsFromModuledata(md uint64, word func(uint64) (uint64, bool)) {
	types, ok1 := word(md + md127Types)
	etypes, ok2 := word(md + md127Etypes)
	off, ok3 := word(md + md127ItabOffset)
	size, ok4 := word(md + md127ItabSize)
	if !ok1 || !ok2 || !ok3 || !ok4 || types != t.base || etypes < types || off > etypes-types || size > etypes-types-off {
		return
	}
	for p, end := types+off, types+off+size; p < end && len(t.itablinks) < 1<<20; {
		inter, ok := t.img.word(p)
		if !ok {
			return
		}
		d, ok := t.Desc(inter)
		if !ok || d.Kind != KindInterface {
			return
		}
		t.itablinks = append(t.itablinks, p)
		p += 24 + 8*uint64(max(len(d.Methods), 1))
	}
}
