package symbols

import (
	"debug/dwarf"
	"strings"
)

// This file assigns a function's results to registers or stack slots
// following the Go internal register ABI
// ($GOROOT/src/cmd/compile/abi-internal.md), to find the error result.

type tkind uint8

const (
	tInt tkind = iota + 1 // bool, integers: one integer register
	tFloat
	tComplex
	tPtr // pointer, map, chan, func, unsafe.Pointer
	tString
	tIface
	tSlice
	tStruct
	tArray
)

// abiType is the part of a Go type the ABI algorithm needs.
type abiType struct {
	kind   tkind
	size   int64
	align  int64
	name   string
	fields []*abiType // tStruct, in declaration order
	elem   *abiType   // tArray
	count  int64      // tArray
}

const ptrSize = 8

// abiRegs returns the number of integer and floating-point registers.
func abiRegs(arch string) (ni, nfp int) {
	if arch == "arm64" {
		return 16, 16 // R0–R15, F0–F15
	}
	return 9, 15 // RAX RBX RCX RDI RSI R8 R9 R10 R11; X0–X14
}

// regAssign tries to register-assign t, advancing *i and *fp.
func regAssign(t *abiType, i, fp *int, ni, nfp int) bool {
	switch t.kind {
	case tInt, tPtr:
		*i++
	case tFloat:
		*fp++
	case tComplex:
		*fp += 2
	case tString, tIface:
		*i += 2
	case tSlice:
		*i += 3
	case tStruct:
		for _, f := range t.fields {
			if !regAssign(f, i, fp, ni, nfp) {
				return false
			}
		}
	case tArray:
		switch t.count {
		case 0:
		case 1:
			if !regAssign(t.elem, i, fp, ni, nfp) {
				return false
			}
		default:
			return false
		}
	default:
		return false
	}
	return *i <= ni && *fp <= nfp
}

func alignUp(n, a int64) int64 {
	if a <= 1 {
		return n
	}
	return (n + a - 1) / a * a
}

// locateError returns where the last `error` result of a function with
// these parameters (receiver and arguments, then results, as DWARF lists
// them) is at RET time, or nil if there is none or a type cannot be sized.
//
// Stack offsets: at RET, SP points at the caller's outgoing argument area
// minus one word. On amd64 that word is the return address pushed by CALL;
// on arm64 the return address is in LR, but the word at 0(SP) of the
// caller's frame is the slot where the caller saved its own LR, and Go's
// arm64 argument area also starts at 8(SP). Either way the stack-assigned
// arguments start at SP+8.
//
// Shape-instantiated generic functions (name contains "go.shape.") take a
// dictionary pointer as their first argument, which DWARF before Go 1.27
// does not list; it is accounted for here unless DWARF lists it as ".dict"
// (Go 1.27+).
func locateError(tr *typeReader, name string, params []paramDIE, arch string) *ErrorResult {
	ps := make([]abiParam, 0, len(params))
	for _, p := range params {
		t := tr.typeAt(p.typ)
		if t == nil {
			return nil
		}
		ps = append(ps, abiParam{t: t, result: p.result})
	}
	implicitDict := strings.Contains(name, "go.shape.") && !hasParam(params, ".dict")
	return locateErrorIn(ps, arch, implicitDict)
}

// abiParam is one parameter or result of a function, in order.
type abiParam struct {
	t      *abiType
	result bool
}

// locateErrorIn is locateError on parameters whose types are resolved,
// from DWARF or from the runtime type descriptors (typeerrs.go).
// implicitDict says a dictionary pointer precedes them in the first
// integer register without being listed.
func locateErrorIn(params []abiParam, arch string, implicitDict bool) *ErrorResult {
	ni, nfp := abiRegs(arch)
	var stack int64 // offset within the stack-assigned area
	var (
		found  *ErrorResult
		i, fp  int
		nres   int
		inArgs = true
	)
	if implicitDict {
		i = 1 // .dict in the first integer register
	}
	for _, p := range params {
		if p.result && inArgs {
			// Args done: pointer-align, reset registers for results.
			inArgs = false
			stack = alignUp(stack, ptrSize)
			i, fp = 0, 0
		}
		if !p.result && !inArgs {
			return nil // arguments after results: not a Go signature we understand
		}
		t := p.t
		si, sfp := i, fp
		inRegs := t.size > 0 && regAssign(t, &i, &fp, ni, nfp)
		var off int64
		if !inRegs {
			i, fp = si, sfp
			stack = alignUp(stack, t.align)
			off = stack
			stack += t.size
		}
		if p.result {
			if t.kind == tIface && t.name == "error" {
				er := &ErrorResult{InRegs: inRegs, Index: nres}
				if inRegs {
					er.ItabReg, er.DataReg = si, si+1
				} else {
					er.StackOff = ptrSize + off
				}
				found = er
			}
			nres++
		}
	}
	return found
}

// typeReader resolves DWARF type DIEs to abiTypes, memoized.
type typeReader struct {
	dw   *dwarf.Data
	r    *dwarf.Reader
	memo map[dwarf.Offset]*abiType
}

func newTypeReader(dw *dwarf.Data) *typeReader {
	return &typeReader{dw: dw, r: dw.Reader(), memo: map[dwarf.Offset]*abiType{}}
}

func (tr *typeReader) typeAt(off dwarf.Offset) *abiType {
	return tr.resolve(off, 0)
}

const maxTypeDepth = 32

func (tr *typeReader) resolve(off dwarf.Offset, depth int) *abiType {
	if off == 0 || depth > maxTypeDepth {
		return nil
	}
	if t, ok := tr.memo[off]; ok {
		return t
	}
	tr.memo[off] = nil // cycle guard: a type cannot contain itself by value
	t := tr.read(off, depth)
	tr.memo[off] = t
	return t
}

// children returns the direct child DIEs of the entry just read.
func (tr *typeReader) children() []*dwarf.Entry {
	var out []*dwarf.Entry
	for n := 0; n < 1<<16; n++ {
		e, err := tr.r.Next()
		if err != nil || e == nil || e.Tag == 0 {
			break
		}
		out = append(out, e)
		if e.Children {
			tr.r.SkipChildren()
		}
	}
	return out
}

func (tr *typeReader) read(off dwarf.Offset, depth int) *abiType {
	tr.r.Seek(off)
	e, err := tr.r.Next()
	if err != nil || e == nil {
		return nil
	}
	t := &abiType{size: -1}
	t.name, _ = e.Val(dwarf.AttrName).(string)
	if sz, ok := e.Val(dwarf.AttrByteSize).(int64); ok {
		t.size = sz
	}
	kind, _ := e.Val(attrGoKind).(int64)
	var kids []*dwarf.Entry
	if e.Children {
		kids = tr.children()
	}
	scalar := func(k tkind, size int64) *abiType {
		if t.size < 0 && (k == tPtr || k == tIface || k == tSlice || k == tString) {
			t.size = size // Go emits interface typedefs without DW_AT_byte_size
		}
		if t.size != size {
			return nil
		}
		t.kind = k
		switch k {
		case tInt, tFloat:
			t.align = size
		case tComplex:
			t.align = size / 2
		default: // pointer-shaped words
			t.align = ptrSize
		}
		return t
	}
	switch {
	case kind >= 1 && kind <= 12: // bool, ints, uints, uintptr
		if t.size < 1 || t.size > 8 {
			return nil
		}
		return scalar(tInt, t.size)
	case kind == 13 || kind == 14:
		if t.size != 4 && t.size != 8 {
			return nil
		}
		return scalar(tFloat, t.size)
	case kind == 15 || kind == 16:
		if t.size != 8 && t.size != 16 {
			return nil
		}
		return scalar(tComplex, t.size)
	case kind == 18 || kind == 19 || kind == 21 || kind == 22 || kind == 26:
		return scalar(tPtr, ptrSize)
	case kind == 20:
		return scalar(tIface, 2*ptrSize)
	case kind == 23:
		return scalar(tSlice, 3*ptrSize)
	case kind == 24:
		return scalar(tString, 2*ptrSize)
	case kind == 25 || (kind == 0 && e.Tag == dwarf.TagStructType):
		return tr.structType(t, kids, depth)
	case kind == 17 || (kind == 0 && e.Tag == dwarf.TagArrayType):
		return tr.arrayType(t, e, kids, depth)
	case kind == 0 && e.Tag == dwarf.TagPointerType:
		return scalar(tPtr, ptrSize)
	case kind == 0 && e.Tag == dwarf.TagTypedef:
		// Unkinded typedefs: `error` as a result type refers to the kinded
		// `error` DIE; generic shapes use ".paramN" typedefs.
		target, ok := e.Val(dwarf.AttrType).(dwarf.Offset)
		if !ok {
			return nil
		}
		u := tr.resolve(target, depth+1)
		if u == nil {
			return nil
		}
		c := *u
		if c.name == "" {
			c.name = t.name
		}
		return &c
	case kind == 0 && e.Tag == dwarf.TagBaseType:
		if enc, _ := e.Val(dwarf.AttrEncoding).(int64); enc == 4 { // DW_ATE_float
			return scalar(tFloat, t.size)
		}
		if t.size < 1 || t.size > 8 {
			return nil
		}
		return scalar(tInt, t.size)
	}
	return nil
}

func (tr *typeReader) structType(t *abiType, kids []*dwarf.Entry, depth int) *abiType {
	if t.size < 0 {
		return nil
	}
	type member struct {
		typ dwarf.Offset
		loc int64
	}
	var ms []member
	for _, k := range kids {
		if k.Tag != dwarf.TagMember {
			continue
		}
		typ, ok1 := k.Val(dwarf.AttrType).(dwarf.Offset)
		loc, ok2 := k.Val(dwarf.AttrDataMemberLoc).(int64)
		if !ok1 || !ok2 {
			return nil
		}
		ms = append(ms, member{typ, loc})
	}
	t.kind, t.align = tStruct, 1
	var end int64
	for _, m := range ms {
		f := tr.resolve(m.typ, depth+1)
		if f == nil || m.loc < end || m.loc+f.size > t.size {
			return nil
		}
		end = m.loc + f.size
		t.fields = append(t.fields, f)
		t.align = max(t.align, f.align)
	}
	return t
}

func (tr *typeReader) arrayType(t *abiType, e *dwarf.Entry, kids []*dwarf.Entry, depth int) *abiType {
	elemOff, ok := e.Val(dwarf.AttrType).(dwarf.Offset)
	if !ok {
		return nil
	}
	count := int64(-1)
	for _, k := range kids {
		if k.Tag != dwarf.TagSubrangeType {
			continue
		}
		if c, ok := k.Val(dwarf.AttrCount).(int64); ok {
			count = c
		} else if ub, ok := k.Val(dwarf.AttrUpperBound).(int64); ok {
			count = ub + 1
		}
	}
	elem := tr.resolve(elemOff, depth+1)
	if elem == nil || count < 0 || (count > 0 && elem.size > 0 && t.size >= 0 && t.size/count != elem.size) {
		return nil
	}
	if t.size < 0 {
		t.size = elem.size * count
	}
	t.kind, t.align, t.elem, t.count = tArray, elem.align, elem, count
	return t
}
