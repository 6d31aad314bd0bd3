package symbols

import "strings"

// Without DWARF nothing in a Go binary describes a plain function's
// results: pclntab keeps only the size of the argument area and, for
// tracebacks, the layout of the arguments (not the results), and neither
// tells an `error` from two other words. What stripped binaries do keep are
// the runtime type descriptors, and those give the exact signature of
// methods: an itab lists the code of each method of its interface, whose
// descriptor gives the method's func type, and a named type's method set
// (its uncommon type) gives each method's func type and code. Those
// signatures, put through the same register ABI assignment as DWARF's
// (abi.go), locate the error result of every method reached this way, and
// say with the same certainty that a method has none.

// ErrSourceDWARF and ErrSourceMethodType say where a function's ErrResult
// (or its certain absence) comes from.
const (
	ErrSourceDWARF      = "dwarf"
	ErrSourceMethodType = "method type"
)

// readTypeData reads the type descriptors and adds the error itabs that
// .itablink (or, from Go 1.27, moduledata) lists to those the symbol table
// named.
func (b *Binary) readTypeData(data []byte, textStart uint64) {
	t, err := readTypesBytes(data)
	if err != nil {
		return
	}
	t.textStart = textStart
	b.types = t
	for addr, name := range t.ErrorItabs() {
		if _, ok := b.Itabs[addr]; !ok {
			b.Itabs[addr] = name
		}
	}
}

// Types returns the binary's type descriptors, or nil when they could not
// be read.
func (b *Binary) Types() *Types { return b.types }

// methodSig is a method's code and the signature it is called with.
type methodSig struct {
	entry uint64
	name  string // method name, checked against the function's symbol
	recv  *abiType
	fn    uint64 // func type without the receiver
}

// errorsFromTypes fills ErrResult (and ErrSource) of every method whose
// signature the type descriptors give, for binaries without DWARF.
func (b *Binary) errorsFromTypes() {
	for f, er := range b.methodErrors() {
		f.ErrResult, f.ErrSource = er, ErrSourceMethodType
	}
}

// methodErrors maps every function that the type descriptors show to be a
// method with a known signature to its error result (nil: none).
func (b *Binary) methodErrors() map[*Func]*ErrorResult {
	t := b.types
	if t == nil {
		return nil
	}
	word := &abiType{kind: tPtr, size: ptrSize, align: ptrSize}
	var sigs []methodSig
	for _, it := range t.Itabs() {
		d, ok := t.Desc(it.Inter)
		if !ok || len(d.Methods) != len(it.Fun) {
			continue
		}
		for i, m := range d.Methods {
			sigs = append(sigs, methodSig{entry: it.Fun[i], name: m.Name, recv: word, fn: m.Type})
		}
	}
	// Method sets of the types reachable from the itabs and typelinks.
	seen := map[uint64]bool{}
	var queue []uint64
	push := func(a uint64) {
		if a != 0 && !seen[a] && len(seen) < 1<<18 {
			seen[a] = true
			queue = append(queue, a)
		}
	}
	for _, it := range t.Itabs() {
		push(it.Type)
	}
	for _, a := range t.Typelinks() {
		push(a)
	}
	for len(queue) > 0 {
		a := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		d, ok := t.Desc(a)
		if !ok {
			continue
		}
		push(d.Elem)
		for _, f := range d.Fields {
			push(f.Type)
		}
		for _, p := range d.In {
			push(p)
		}
		for _, p := range d.Out {
			push(p)
		}
		if len(d.Methods) == 0 || d.Kind == KindInterface {
			continue
		}
		recv := t.abiTypeOf(a, 0)
		for _, m := range d.Methods {
			push(m.Type)
			if m.Tfn != 0 && recv != nil {
				sigs = append(sigs, methodSig{entry: m.Tfn, name: m.Name, recv: recv, fn: m.Type})
			}
			if m.Ifn != 0 && m.Ifn != m.Tfn {
				sigs = append(sigs, methodSig{entry: m.Ifn, name: m.Name, recv: word, fn: m.Type})
			}
		}
	}

	byEntry := make(map[uint64]*Func, len(b.Funcs))
	for _, f := range b.Funcs {
		byEntry[f.Entry] = f
	}
	type result struct {
		er       *ErrorResult
		conflict bool
	}
	found := map[*Func]*result{}
	for _, s := range sigs {
		f := byEntry[s.entry]
		// The code address must be a function whose symbol is this
		// method: anything else (a second text section, a dropped
		// method) is not trusted.
		if f == nil || s.fn == 0 || s.name == "" || !strings.HasSuffix(f.Name, "."+s.name) || strings.Contains(f.Name, "go.shape.") {
			continue
		}
		er, ok := b.methodError(s)
		if !ok {
			continue
		}
		if r, ok := found[f]; ok {
			if !sameErrResult(r.er, er) {
				r.conflict = true
			}
			continue
		}
		found[f] = &result{er: er}
	}
	out := make(map[*Func]*ErrorResult, len(found))
	for f, r := range found {
		if !r.conflict {
			out[f] = r.er
		}
	}
	return out
}

// methodError locates the error result of a method called with receiver
// s.recv and the signature s.fn; ok is false when a type cannot be sized.
func (b *Binary) methodError(s methodSig) (*ErrorResult, bool) {
	t := b.types
	d, ok := t.Desc(s.fn)
	if !ok || d.Kind != KindFunc {
		return nil, false
	}
	params := []abiParam{{t: s.recv}}
	for _, p := range d.In {
		at := t.abiTypeOf(p, 0)
		if at == nil {
			return nil, false
		}
		params = append(params, abiParam{t: at})
	}
	for _, p := range d.Out {
		at := t.abiTypeOf(p, 0)
		if at == nil {
			return nil, false
		}
		params = append(params, abiParam{t: at, result: true})
	}
	return locateErrorIn(params, b.Arch, false), true
}

func sameErrResult(a, b *ErrorResult) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// abiTypeOf is the ABI view of a type descriptor (what abi.go's register
// assignment needs), or nil when it cannot be sized.
func (t *Types) abiTypeOf(addr uint64, depth int) *abiType {
	if depth > maxTypeDepth {
		return nil
	}
	d, ok := t.Desc(addr)
	if !ok {
		return nil
	}
	at := &abiType{size: int64(d.Size), align: int64(d.Align), name: d.Name}
	switch d.Kind {
	case KindBool, KindInt, KindInt8, KindInt16, KindInt32, KindInt64,
		KindUint, KindUint8, KindUint16, KindUint32, KindUint64, KindUintptr:
		at.kind = tInt
	case KindFloat32, KindFloat64:
		at.kind = tFloat
	case KindComplex64, KindComplex128:
		at.kind = tComplex
	case KindPointer, KindMap, KindChan, KindFunc, KindUnsafePointer:
		at.kind = tPtr
	case KindInterface:
		at.kind = tIface
	case KindString:
		at.kind = tString
	case KindSlice:
		at.kind = tSlice
	case KindStruct:
		at.kind = tStruct
		for _, f := range d.Fields {
			ft := t.abiTypeOf(f.Type, depth+1)
			if ft == nil {
				return nil
			}
			at.fields = append(at.fields, ft)
		}
	case KindArray:
		at.kind = tArray
		at.elem = t.abiTypeOf(d.Elem, depth+1)
		at.count = int64(d.Len)
		if at.elem == nil {
			return nil
		}
	default:
		return nil
	}
	return at
}
