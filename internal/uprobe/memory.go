package uprobe

import (
	"fmt"
	"math/bits"
	"os"

	"github.com/cilium/ebpf"
)

// Sizes are the capacities of the maps whose size is a memory choice. They
// are set on the collection spec before it is loaded (apply, the one place
// any map size is set), so the same BPF object serves every memory limit.
// A zero field keeps its DefaultSizes value.
type Sizes struct {
	RingOK     uint32 // bytes of the ok ring: a power of two, at least a page
	RingErr    uint32 // bytes of the error ring, likewise
	Goroutines uint32 // goroutines with state in the hash map at once
	Frames     uint32 // frames deeper than the inline ones, over all goroutines
	// GoroutineSlots is the size of the goroutine slot table, where a
	// goroutine's state is found without a helper call; goroutines beyond
	// it use the hash map bounded by Goroutines. A power of two; 1 turns
	// the table off. Its memory is allocated up front: about 700 bytes a
	// slot.
	GoroutineSlots uint32
	// ErrTextNodes is how many error types' read plans the error-text
	// map holds (bpf/errtext.h); preallocated. Config.ErrText must fit.
	ErrTextNodes uint32
}

// DefaultSizes are the sizes the tracer uses unless told otherwise.
var DefaultSizes = Sizes{RingOK: 16 << 20, RingErr: 8 << 20, Goroutines: 1 << 18, Frames: 1 << 20, GoroutineSlots: 1 << 12, ErrTextNodes: 1 << 12}

func (s Sizes) withDefaults() Sizes {
	d := DefaultSizes
	for _, f := range []struct{ dst, src *uint32 }{
		{&d.RingOK, &s.RingOK}, {&d.RingErr, &s.RingErr}, {&d.Goroutines, &s.Goroutines},
		{&d.Frames, &s.Frames}, {&d.GoroutineSlots, &s.GoroutineSlots},
		{&d.ErrTextNodes, &s.ErrTextNodes},
	} {
		if *f.src != 0 {
			*f.dst = *f.src
		}
	}
	return d
}

// check says what the kernel would refuse, in words.
func (s Sizes) check() error {
	page := uint32(os.Getpagesize())
	for _, r := range []struct {
		name string
		n    uint32
	}{{"ok ring", s.RingOK}, {"error ring", s.RingErr}} {
		if r.n < page || r.n&(r.n-1) != 0 {
			return fmt.Errorf("%s size %d bytes: want a power of two of at least %d (a page)", r.name, r.n, page)
		}
	}
	if n := s.GoroutineSlots; n&(n-1) != 0 {
		return fmt.Errorf("goroutine slots %d: want a power of two", n)
	}
	return nil
}

// apply sets the size of every map that has one to choose on spec: s, with
// defaults for its zero fields, and the function tables for nfuncs. It
// returns the sizes it set.
func (s Sizes) apply(spec *ebpf.CollectionSpec, nfuncs int) (Sizes, error) {
	sz := s.withDefaults()
	if err := sz.check(); err != nil {
		return sz, err
	}
	n := uint32(max(nfuncs, 1))
	for _, m := range []struct {
		name string
		v    uint32
	}{
		{obsMapRingOk, sz.RingOK}, {obsMapRingErr, sz.RingErr},
		{obsMapGoroutines, sz.Goroutines}, {obsMapFrames, sz.Frames},
		{obsMapGslots, sz.GoroutineSlots}, {obsMapErrtextNodes, sz.ErrTextNodes},
		{obsMapFuncs, n}, {obsMapFstats, n},
	} {
		ms := spec.Maps[m.name]
		if ms == nil {
			return sz, fmt.Errorf("BPF map %q not found in the object", m.name)
		}
		ms.MaxEntries = m.v
	}
	return sz, nil
}

// KernelMemory is what the loaded maps can take of kernel memory, which
// is charged to the agent's memory cgroup, at their full capacity.
type KernelMemory struct {
	Rings int64 // both ring buffers
	Maps  int64 // every other map, at max_entries
	// PerMap is the estimate per map name.
	PerMap map[string]int64
}

// Total is Rings + Maps.
func (k KernelMemory) Total() int64 { return k.Rings + k.Maps }

// EstimateKernelMemory returns the kernel memory of the maps that Attach
// loads for nfuncs functions with sizes, at full capacity. It follows the
// kernel's allocations (kernel/bpf/ringbuf.c, arraymap.c, hashtab.c,
// memalloc.c) with some rounding up:
//
//   - a ring buffer: its data pages plus the consumer and producer pages
//     and the page array (the data pages are mapped twice but exist once);
//   - an array: max_entries values, per possible CPU for a per-CPU array;
//   - a hash map: a bucket array of max_entries rounded up to a power of
//     two (16 bytes each), plus the elements: preallocated ones up front,
//     and for BPF_F_NO_PREALLOC maps each element in the next size class
//     of the BPF memory allocator, up to max_entries, plus the free
//     elements that allocator caches per CPU.
//
// BPF programs, links and the verifier's working memory are not maps;
// the caller adds an allowance for them.
func EstimateKernelMemory(nfuncs int, sizes Sizes) (KernelMemory, error) {
	spec, err := loadObs()
	if err != nil {
		return KernelMemory{}, fmt.Errorf("load BPF spec: %w", err)
	}
	if _, err := sizes.apply(spec, nfuncs); err != nil {
		return KernelMemory{}, err
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return KernelMemory{}, err
	}
	page := int64(os.Getpagesize())
	k := KernelMemory{PerMap: map[string]int64{}}
	for name, m := range spec.Maps {
		var b int64
		entries := int64(m.MaxEntries)
		val := roundUp(int64(m.ValueSize), 8)
		switch m.Type {
		case ebpf.RingBuf:
			pages := entries/page + 2
			b = (pages + pages/(page/8) + 1) * page
			k.Rings += b
		case ebpf.Array:
			b = entries*val + page
		case ebpf.PerCPUArray:
			b = entries*val*int64(cpus) + page
		case ebpf.Hash:
			b = hashMemory(entries, int64(m.KeySize), val, m.Flags&bpfFNoPrealloc != 0, int64(cpus))
		case ebpf.LRUHash:
			// Always preallocated; the LRU node lives in the element's
			// header.
			b = hashMemory(entries, int64(m.KeySize), val, false, int64(cpus))
		default:
			// Not used by obs.c today; count a page per entry rather
			// than nothing.
			b = entries * page
		}
		if m.Type != ebpf.RingBuf {
			k.Maps += b
		}
		k.PerMap[name] = b
	}
	return k, nil
}

// bpfFNoPrealloc is BPF_F_NO_PREALLOC.
const bpfFNoPrealloc = 1

// htabElemHeader is sizeof(struct htab_elem) before the key, rounded up.
const htabElemHeader = 48

// hashMemory estimates a BPF hash map at max_entries.
func hashMemory(entries, key, val int64, noPrealloc bool, cpus int64) int64 {
	buckets := int64(1) << bits.Len64(uint64(max(entries, 1)-1)) * 16
	elem := htabElemHeader + roundUp(key, 8) + val
	if !noPrealloc {
		// Preallocated, with one extra element per CPU for updates.
		return buckets + (entries+cpus)*elem
	}
	// bpf_mem_alloc adds an 8-byte list node and serves from size classes;
	// each CPU's cache may hold up to its high watermark of free elements.
	// (memalloc.c: the high watermark is 96 up to 256 bytes, then scaled
	// down, at least 3).
	class := sizeClass(elem + 8)
	cached := int64(96)
	if class > 256 {
		cached = max(96*256/class, 3)
	}
	return buckets + entries*class + cpus*cached*class
}

// sizeClass is the BPF memory allocator's size class for n bytes
// (kernel/bpf/memalloc.c: sizes[]), or n rounded up to a page above it.
func sizeClass(n int64) int64 {
	for _, c := range []int64{16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096} {
		if n <= c {
			return c
		}
	}
	return roundUp(n, int64(os.Getpagesize()))
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// ElementCost is the kernel memory one more entry of the map name costs
// at full capacity. For a hash map: its element in its size class plus up
// to two buckets (the bucket array is a power of two); for an array (the
// goroutine slot table): its value. Used to fit the goroutine and frame
// maps to a memory share.
func ElementCost(name string) (int64, error) {
	spec, err := loadObs()
	if err != nil {
		return 0, fmt.Errorf("load BPF spec: %w", err)
	}
	m := spec.Maps[name]
	switch {
	case m != nil && m.Type == ebpf.Array:
		return roundUp(int64(m.ValueSize), 8), nil
	case m == nil || m.Type != ebpf.Hash:
		return 0, fmt.Errorf("BPF hash map or array %q not found in the object", name)
	}
	elem := htabElemHeader + roundUp(int64(m.KeySize), 8) + roundUp(int64(m.ValueSize), 8)
	if m.Flags&bpfFNoPrealloc != 0 {
		elem = sizeClass(elem + 8)
	}
	return elem + 2*16, nil
}
