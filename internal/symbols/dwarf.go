package symbols

import (
	"debug/dwarf"
	"fmt"
	"sort"
)

// attrGoKind is DW_AT_go_kind: the reflect.Kind of a Go type DIE.
const attrGoKind = dwarf.Attr(0x2900)

// dwarfInfo is what this package takes from DWARF.
type dwarfInfo struct {
	layout     layoutSeen
	errResults map[uint64]*ErrorResult // by function entry (DW_AT_low_pc)
	inlined    map[string]int          // abstract function name -> inlined call sites
}

type paramDIE struct {
	name   string
	typ    dwarf.Offset
	result bool
}

type subprogramDIE struct {
	name   string
	lowpc  uint64
	hasLow bool
	origin dwarf.Offset // DW_AT_abstract_origin, 0 if none
	params []paramDIE
}

// readDWARF walks all DIEs once. Errors in individual types only drop the
// affected ErrResult; an unreadable DIE stream is an error.
func readDWARF(dw *dwarf.Data, arch string) (*dwarfInfo, error) {
	info := &dwarfInfo{errResults: map[uint64]*ErrorResult{}, inlined: map[string]int{}}
	subs := map[dwarf.Offset]*subprogramDIE{}
	var order []*subprogramDIE
	inlineCounts := map[dwarf.Offset]int{}

	r := dw.Reader()
	depth := 0
	var cur *subprogramDIE
	curDepth := -1
	var rt runtimeStructWalk
	for {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("read dwarf: %w", err)
		}
		if e == nil {
			break
		}
		if e.Tag == 0 {
			depth--
			if cur != nil && depth <= curDepth {
				cur = nil
			}
			rt.leave(depth)
			continue
		}
		switch e.Tag {
		case dwarf.TagSubprogram:
			s := &subprogramDIE{}
			s.name, _ = e.Val(dwarf.AttrName).(string)
			s.lowpc, s.hasLow = e.Val(dwarf.AttrLowpc).(uint64)
			s.origin, _ = e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
			subs[e.Offset] = s
			order = append(order, s)
			if e.Children {
				cur, curDepth = s, depth
			}
		case dwarf.TagFormalParameter:
			if cur != nil && depth == curDepth+1 {
				p := paramDIE{}
				p.name, _ = e.Val(dwarf.AttrName).(string)
				p.typ, _ = e.Val(dwarf.AttrType).(dwarf.Offset)
				p.result, _ = e.Val(dwarf.AttrVarParam).(bool)
				// Go (seen with 1.26) can emit a stack-assigned result
				// twice; names are unique per function (~r0, ~p1, ...),
				// so drop repeats.
				if !hasParam(cur.params, p.name) {
					cur.params = append(cur.params, p)
				}
			}
		case dwarf.TagInlinedSubroutine:
			if o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok {
				inlineCounts[o]++
			}
		case dwarf.TagStructType:
			rt.enter(e, depth, &info.layout)
		case dwarf.TagMember:
			rt.member(e, depth, &info.layout)
		}
		if e.Children {
			depth++
		}
	}

	for off, n := range inlineCounts {
		if s := subs[off]; s != nil && s.name != "" {
			info.inlined[s.name] += n
		}
	}

	tr := newTypeReader(dw)
	for _, s := range order {
		if !s.hasLow {
			continue
		}
		params, name := s.params, s.name
		if s.origin != 0 {
			abs := subs[s.origin]
			if abs == nil {
				continue
			}
			params, name = abs.params, abs.name
		}
		if er := locateError(tr, name, params, arch); er != nil {
			info.errResults[s.lowpc] = er
		}
	}
	return info, nil
}

// applyDWARF fills the DWARF-derived fields (or their no-DWARF defaults).
func (b *Binary) applyDWARF(info *dwarfInfo) error {
	if info != nil && info.layout.complete() {
		b.Layout, b.LayoutSource = info.layout.l, "dwarf"
	} else {
		l, err := layoutFor(b.GoVersion)
		if err != nil {
			return err
		}
		b.Layout, b.LayoutSource = l, "table"
	}
	if err := b.Layout.checkFixed(); err != nil {
		return fmt.Errorf("%s: %w", b.GoVersion, err)
	}
	if info == nil {
		return nil
	}
	for _, f := range b.Funcs {
		f.InlinedSites = info.inlined[f.Name]
		f.ErrResult = info.errResults[f.Entry]
		f.ErrSource = ErrSourceDWARF
	}
	for name := range info.inlined {
		if b.byName[name] == nil {
			b.inlinedOnly = append(b.inlinedOnly, name)
		}
	}
	sort.Strings(b.inlinedOnly)
	return nil
}

func hasParam(ps []paramDIE, name string) bool {
	if name == "" || name == "_" {
		return false
	}
	for _, p := range ps {
		if p.name == name {
			return true
		}
	}
	return false
}
