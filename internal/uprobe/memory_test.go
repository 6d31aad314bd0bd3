package uprobe

import (
	"os"
	"testing"
	"unsafe"
)

// TestEstimateKernelMemory pins the estimate's arithmetic for the maps
// whose size is chosen from the memory limit, and checks that Sizes reach
// the maps.
func TestEstimateKernelMemory(t *testing.T) {
	sz := Sizes{RingOK: 1 << 20, RingErr: 1 << 19, Goroutines: 1000, Frames: 4096}
	k, err := EstimateKernelMemory(10, sz)
	if err != nil {
		t.Fatal(err)
	}
	page := int64(4096)
	if os.Getpagesize() != int(page) {
		t.Skipf("the expected figures are for 4 KiB pages, this system has %d", os.Getpagesize())
	}
	// A ring: 256 data pages + the consumer and producer pages, plus one
	// page of page array (258 pointers).
	if got, want := k.PerMap[obsMapRingOk], int64(256+2+1)*page; got != want {
		t.Errorf("ok ring %d, want %d", got, want)
	}
	if k.Rings != k.PerMap[obsMapRingOk]+k.PerMap[obsMapRingErr] || k.Rings < 3<<19 {
		t.Errorf("rings %d", k.Rings)
	}
	// goroutines: 1024 buckets of 16 bytes, elements in the 1024-byte class.
	if g := k.PerMap[obsMapGoroutines]; g < 1024*16+1000*1024 || g > 1024*16+1000*1024+256*1024*24 {
		t.Errorf("goroutines map %d bytes, outside what 1000 1 KiB elements need", g)
	}
	// The slot table is an array, allocated whole: a slot per entry.
	slot := int64(unsafe.Sizeof(obsGslot{}))
	if g := k.PerMap[obsMapGslots]; g < int64(DefaultSizes.GoroutineSlots)*slot {
		t.Errorf("slot table %d bytes, below %d slots of %d bytes", g, DefaultSizes.GoroutineSlots, slot)
	}
	// The error-text plans: preallocated, a plan per entry.
	node := int64(unsafe.Sizeof(obsErrtextNode{}))
	if e := k.PerMap[obsMapErrtextNodes]; e < int64(DefaultSizes.ErrTextNodes)*node {
		t.Errorf("error-text plans %d bytes, below %d plans of %d bytes", e, DefaultSizes.ErrTextNodes, node)
	}
	if few, err := EstimateKernelMemory(10, Sizes{ErrTextNodes: 64}); err != nil || few.PerMap[obsMapErrtextNodes] >= k.PerMap[obsMapErrtextNodes] {
		t.Errorf("64 error-text plans do not cost less than %d: %v", DefaultSizes.ErrTextNodes, err)
	}
	if k.Maps < k.PerMap[obsMapGslots]+k.PerMap[obsMapGoroutines]+k.PerMap[obsMapFrames] {
		t.Errorf("maps %d bytes, less than their parts", k.Maps)
	}
	big, err := EstimateKernelMemory(10, Sizes{RingOK: 1 << 20, RingErr: 1 << 19, Goroutines: 2000, Frames: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if d := big.PerMap[obsMapGoroutines] - k.PerMap[obsMapGoroutines]; d < 1000*1024 {
		t.Errorf("1000 more goroutines cost %d bytes more, want >= 1000 KiB", d)
	}
	if _, err := EstimateKernelMemory(10, Sizes{RingOK: 3 << 20}); err == nil {
		t.Error("a ring that is not a power of two was accepted")
	}
	if _, err := EstimateKernelMemory(10, Sizes{GoroutineSlots: 3000}); err == nil {
		t.Error("a slot table that is not a power of two was accepted")
	}
	t.Logf("estimate: rings %d, maps %d: %v", k.Rings, k.Maps, k.PerMap)
}
