package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// findPclntab returns the pclntab bytes (possibly with trailing data) and
// its vaddr. It tries, in order: the .gopclntab section (.data.rel.ro.gopclntab
// in older PIE builds), the runtime.pclntab symbol, then a scan of every
// PT_LOAD segment for a header magic that parses.
func findPclntab(ef *elf.File, data []byte, syms []elf.Symbol) ([]byte, uint64, error) {
	for _, name := range []string{".gopclntab", ".data.rel.ro.gopclntab"} {
		s := ef.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		if s.Offset > uint64(len(data)) || s.Size > uint64(len(data))-s.Offset {
			return nil, 0, fmt.Errorf("section %s exceeds the file: %w", name, errBadPclntab)
		}
		b := data[s.Offset : s.Offset+s.Size]
		if !looksLikePclntab(b) {
			return nil, 0, fmt.Errorf("section %s has no pclntab header: %w", name, errBadPclntab)
		}
		return b, s.Addr, nil
	}
	var start, end uint64
	for _, s := range syms {
		switch s.Name {
		case "runtime.pclntab":
			start = s.Value
		case "runtime.epclntab":
			end = s.Value
		}
	}
	if start != 0 && end > start {
		if b, ok := loadBytes(ef, data, start, end-start); ok && looksLikePclntab(b) {
			return b, start, nil
		}
	}
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || p.Off > uint64(len(data)) || p.Filesz > uint64(len(data))-p.Off {
			continue
		}
		seg := data[p.Off : p.Off+p.Filesz]
		for _, m := range []uint32{magic120, magic118, magic116, magic12} {
			var pat [4]byte
			binary.LittleEndian.PutUint32(pat[:], m)
			for i := 0; i < len(seg); {
				j := bytes.Index(seg[i:], pat[:])
				if j < 0 {
					break
				}
				at := i + j
				i = at + 1
				if at%4 != 0 || !looksLikePclntab(seg[at:]) {
					continue
				}
				if m != magic12 {
					if _, err := parsePclntab(seg[at:], 0); err != nil {
						continue
					}
				}
				return seg[at:], p.Vaddr + uint64(at), nil
			}
		}
	}
	return nil, 0, fmt.Errorf("%w: no .gopclntab section, runtime.pclntab symbol or pclntab header in any segment", ErrNotGo)
}

// loadBytes returns n bytes at vaddr from the PT_LOAD segment holding them.
func loadBytes(ef *elf.File, data []byte, vaddr, n uint64) ([]byte, bool) {
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || vaddr < p.Vaddr || vaddr-p.Vaddr >= p.Filesz {
			continue
		}
		off := vaddr - p.Vaddr
		if n > p.Filesz-off || p.Off > uint64(len(data)) || p.Off+off+n > uint64(len(data)) || p.Off+off+n < p.Off {
			return nil, false
		}
		return data[p.Off+off : p.Off+off+n], true
	}
	return nil, false
}

// findTextStart returns runtime.text, the base that Go 1.18+ pclntab entry
// offsets are relative to (Go 1.26 no longer stores it in the pclntab
// header). Sources, in order: the runtime.text symbol; runtime.firstmoduledata
// found by its pointer to the pclntab (plain words, or R_*_RELATIVE addends
// in PIE); the .text section address (equal to runtime.text with Go's
// internal linker).
func findTextStart(ef *elf.File, data []byte, syms []elf.Symbol, tab []byte, tabAddr uint64) (uint64, error) {
	if binary.LittleEndian.Uint32(tab) == magic116 {
		return 0, nil // entries are absolute addresses
	}
	for _, s := range syms {
		if s.Name == "runtime.text" && s.Value != 0 {
			return s.Value, nil
		}
	}
	if t, ok := textFromModuledata(ef, data, tab, tabAddr); ok {
		return t, nil
	}
	if s := ef.Section(".text"); s != nil && s.Addr != 0 {
		return s.Addr, nil
	}
	return 0, fmt.Errorf("locate runtime.text: no symbol, moduledata or .text section: %w", errBadPclntab)
}

// moduledata field offsets (64-bit), stable from Go 1.16 through 1.26:
// pcHeader, funcnametab, cutab, filetab, pctab, pclntable, ftab (slices of
// 24 bytes), findfunctab, minpc, maxpc, text.
const (
	mdFuncnametab = 8
	mdText        = 8 + 6*24 + 3*8
)

func textFromModuledata(ef *elf.File, data []byte, tab []byte, tabAddr uint64) (uint64, bool) {
	md, word, ok := findModuledata(ef, data, tab, tabAddr)
	if !ok {
		return 0, false
	}
	t, ok := word(md + mdText)
	return t, ok && t != 0
}

// findModuledata finds runtime.firstmoduledata by its pointers to the
// pclntab and its function name table, and returns its address and a
// reader of its (relocated) words.
func findModuledata(ef *elf.File, data []byte, tab []byte, tabAddr uint64) (uint64, func(uint64) (uint64, bool), bool) {
	if len(tab) < 8+4*8 || tab[7] != 8 {
		return 0, nil, false
	}
	funcnameAddr := tabAddr + binary.LittleEndian.Uint64(tab[8+3*8:])
	relocs := relativeRelocs(ef, data)
	word := func(vaddr uint64) (uint64, bool) {
		b, ok := loadBytes(ef, data, vaddr, 8)
		if !ok {
			return 0, false
		}
		if v := binary.LittleEndian.Uint64(b); v != 0 {
			return v, true
		}
		v, ok := relocs[vaddr]
		return v, ok
	}
	check := func(md uint64) bool {
		if v, ok := word(md + mdFuncnametab); !ok || v != funcnameAddr {
			return false
		}
		t, ok := word(md + mdText)
		return ok && t != 0
	}
	for off, addend := range relocs {
		if addend == tabAddr && check(off) {
			return off, word, true
		}
	}
	var pat [8]byte
	binary.LittleEndian.PutUint64(pat[:], tabAddr)
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_W == 0 || p.Off > uint64(len(data)) || p.Filesz > uint64(len(data))-p.Off {
			continue
		}
		seg := data[p.Off : p.Off+p.Filesz]
		for i := 0; i < len(seg); {
			j := bytes.Index(seg[i:], pat[:])
			if j < 0 {
				break
			}
			at := i + j
			i = at + 1
			if at%8 == 0 && check(p.Vaddr+uint64(at)) {
				return p.Vaddr + uint64(at), word, true
			}
		}
	}
	return 0, nil, false
}

// relativeRelocs maps r_offset to addend for R_X86_64_RELATIVE and
// R_AARCH64_RELATIVE entries of every SHT_RELA section.
func relativeRelocs(ef *elf.File, data []byte) map[uint64]uint64 {
	m := map[uint64]uint64{}
	for _, s := range ef.Sections {
		if s.Type != elf.SHT_RELA || s.Offset > uint64(len(data)) || s.Size > uint64(len(data))-s.Offset {
			continue
		}
		b := data[s.Offset : s.Offset+s.Size]
		for ; len(b) >= 24; b = b[24:] {
			typ := uint32(binary.LittleEndian.Uint64(b[8:]))
			if (ef.Machine == elf.EM_X86_64 && typ == uint32(elf.R_X86_64_RELATIVE)) ||
				(ef.Machine == elf.EM_AARCH64 && typ == uint32(elf.R_AARCH64_RELATIVE)) {
				m[binary.LittleEndian.Uint64(b)] = binary.LittleEndian.Uint64(b[16:])
			}
		}
	}
	return m
}
