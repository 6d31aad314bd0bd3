// Package errtext owns the text of returned errors and panic values: it
// compiles, from a binary's runtime type descriptors, the read plans that
// the BPF side (bpf/errtext.h) runs to capture an error's value at RET (or
// a panic value at runtime.gopanic), and renders a captured value as its
// Error() would (for the standard library's common error types, wrapped
// chains included) or as Go syntax (&main.MyErr{Op:"save", Code:7}) for
// any other type. No code ever runs in the target: everything is read from
// its memory and its binary.
package errtext

import (
	"github.com/obs-agent/obs-agent/internal/symbols"
	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// maxPlans bounds the plans of one binary: what the BPF map of plans
// holds at the size the agent loads it with.
var maxPlans = int(uprobe.DefaultSizes.ErrTextNodes)

// Plans compiles the read plan of every type that a static itab of the
// `error` interface names, of the types their values point to, and of the
// types of the static itabs of the interfaces their fields hold (a
// *net.OpError's net.Addr), keyed by run-time address (link-time address
// + bias, the load bias of a PIE).
func Plans(t *symbols.Types, bias uint64) map[uint64]uprobe.ErrTextNode {
	out := map[uint64]uprobe.ErrTextNode{}
	if t == nil {
		return out
	}
	var queue []uint64
	seen := map[uint64]bool{}
	push := func(a uint64) {
		if a != 0 && !seen[a] {
			seen[a] = true
			queue = append(queue, a)
		}
	}
	impls := map[uint64][]uint64{} // interface -> concrete types of its static itabs
	for _, it := range t.Itabs() {
		impls[it.Inter] = append(impls[it.Inter], it.Type)
		if in, ok := t.Lookup(it.Inter); ok && in.Name == "error" {
			push(it.Type)
		}
	}
	pushIface := func(inter uint64) {
		for _, c := range impls[inter] {
			push(c)
		}
	}
	for len(queue) > 0 && len(out) < maxPlans {
		a := queue[0]
		queue = queue[1:]
		d, ok := t.Desc(a)
		if !ok {
			continue
		}
		switch {
		case d.Kind == symbols.KindPointer:
			out[a+bias] = uprobe.ErrTextNode{Direct: true, Elem: d.Elem + bias}
			push(d.Elem)
		case d.DirectIface:
			// Another pointer-shaped type (a map, a chan, a struct of
			// one pointer): not followed.
		default:
			n := uprobe.ErrTextNode{Size: uint16(min(d.Size, uint64(uprobe.ErrTextChunk)))}
			addFields(t, d, 0, &n, push, pushIface, bias, 0)
			out[a+bias] = n
		}
	}
	return out
}

// addFields adds the fields of a value of type d at offset off that the
// BPF side must follow: strings, pointers, interfaces, and slices of bytes
// or of interfaces. Nested structs are flattened.
func addFields(t *symbols.Types, d *symbols.TypeDesc, off uint64, n *uprobe.ErrTextNode, push, pushIface func(uint64), bias uint64, depth int) {
	if depth > 4 || off+8 > uint64(uprobe.ErrTextChunk) {
		return
	}
	add := func(f uprobe.ErrTextField) {
		if len(n.Fields) < uprobe.ErrTextFields {
			n.Fields = append(n.Fields, f)
		}
	}
	switch d.Kind {
	case symbols.KindString:
		add(uprobe.ErrTextField{Off: uint16(off), Kind: uprobe.ErrTextStr})
	case symbols.KindPointer:
		add(uprobe.ErrTextField{Off: uint16(off), Kind: uprobe.ErrTextPtr, Elem: d.Elem + bias})
		push(d.Elem)
	case symbols.KindInterface:
		k := uprobe.ErrTextIface
		if len(d.Methods) == 0 {
			k = uprobe.ErrTextEface
		} else {
			pushIface(d.Addr)
		}
		add(uprobe.ErrTextField{Off: uint16(off), Kind: k})
	case symbols.KindSlice:
		e, ok := t.Desc(d.Elem)
		if !ok {
			return
		}
		switch {
		case e.Kind == symbols.KindInterface && len(e.Methods) > 0:
			add(uprobe.ErrTextField{Off: uint16(off), Kind: uprobe.ErrTextIfaces})
		case e.Kind >= symbols.KindBool && e.Kind <= symbols.KindComplex128 && e.Size > 0:
			add(uprobe.ErrTextField{Off: uint16(off), Kind: uprobe.ErrTextBytes, Elem: e.Size})
		}
	case symbols.KindStruct:
		for _, f := range d.Fields {
			fd, ok := t.Desc(f.Type)
			if !ok {
				continue
			}
			addFields(t, fd, off+f.Offset, n, push, pushIface, bias, depth+1)
		}
	}
}
