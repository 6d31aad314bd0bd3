package agent

import (
	"fmt"
	"math/bits"
	"runtime/debug"
	"runtime/metrics"

	"github.com/obs-agent/obs-agent/internal/uprobe"
)

// DefaultMemoryLimit is the memory an agent may use when Options gives
// none: kernel memory (rings, maps, programs) plus its own. It gives the
// rings the sizes bpf/obs.c had before they followed the limit (16 and 8
// MiB) with room for the agent's Go base memory to grow: at 128 MiB they
// held only while that base stayed under about 15 MiB, and the base of an
// agent that links the metrics and export code measured up to 22 MiB. A
// flood against full disks peaked at 0.70 of the need it prints
// (TestMemoryLimitFloodFullDisk).
const DefaultMemoryLimit = 160 << 20

// MinMemoryLimit is the smallest limit that leaves the rings, maps and
// queues a useful size on top of the fixed costs (about 36 MiB, most of
// it the allowances below).
const MinMemoryLimit = 64 << 20

// Fixed allowances, from measurements on the test machine (amd64, 2 CPUs,
// Linux 6.18, cgroup v1) with TestMemoryLimitFloodFullDisk, rounded up:
// the cgroup's kernel memory peaked about 6 MB above the rings and maps
// while the programs loaded, and the agent's RssAnon peaked 6 MiB under
// the Go and SQLite budget with both queues full.
const (
	// programsAllowance: the BPF programs, their JIT images, the links
	// and perf events, and the verifier's memory while they load, which
	// are charged to the agent's cgroup but are not maps.
	programsAllowance = 8 << 20
	// workAllowance: the Go memory of a session beyond what is in use
	// after reading the binary and beyond the queues: ring read buffers,
	// the store writer's batch and its statement arguments, aggregates,
	// helpers' stacks, and garbage between two collections.
	workAllowance = 16 << 20
	// laneFactor: a queued record's real memory over what the queue
	// counts for it. The error lane is a slice that doubles when it
	// grows; the ok lane grows in chunks and keeps some emptied ones for
	// reuse (internal/queue, lane.go).
	laneFactor = 2
	// sqliteFactor: SQLite's memory over its page-cache budget (its soft
	// heap limit is twice the cache).
	sqliteFactor = 2
	// resolverAllowance: the OTLP sink's root resolver (otlpsink.go): its
	// memo of trace roots (rootMemo slots of 16 bytes: 1 MiB) and the
	// records it holds (at most maxHeld), about 2 MiB at most, rounded up.
	// Its requests in flight (DefaultOTLPRequests, about 1 MiB each: a
	// batch of 2,048 records 240 KB, the encoder's buffers 660 KB, the
	// gzipped body) are in workAllowance, like the store writer's batch:
	// under a flood with three in flight the agent's RssAnon peaked at
	// 64.3 MiB against a Go + SQLite budget of 68.1 MiB.
	resolverAllowance = 4 << 20
)

// Budget splits a memory limit among the parts of the agent that can
// grow, and says what the agent needs in total. Every figure is bytes.
type Budget struct {
	Limit int64
	// Base is the Go memory in use after the binary was read and the
	// functions selected (runtime/metrics, after a collection).
	Base     int64
	Work     int64 // workAllowance
	Programs int64 // programsAllowance
	Kernel   uprobe.KernelMemory
	Sizes    uprobe.Sizes
	OKLane   int64 // the ok lane's bound, as the queue counts it
	ErrLane  int64 // the error lane's bound, as the queue counts it
	SQLite   int64 // SQLite's page caches (store.Options.CacheBytes)
	// The OTLP sink's lanes and resolver; 0 without it.
	OTLPOKLane, OTLPErrLane, Resolver int64
}

// GoLimit is the Go runtime's memory limit: everything the Go heap and
// runtime hold. Kernel memory and SQLite (which allocates outside the Go
// heap) are not in it.
func (b *Budget) GoLimit() int64 {
	return b.Base + b.Work + laneFactor*(b.OKLane+b.ErrLane+b.OTLPOKLane+b.OTLPErrLane) + b.Resolver
}

// Need is the agent's total memory need, as charged to its memory cgroup:
// the Go part, SQLite, the kernel maps and rings, and the programs.
func (b *Budget) Need() int64 {
	return b.GoLimit() + sqliteFactor*b.SQLite + b.Kernel.Total() + b.Programs
}

// String is the line printed at start.
func (b *Budget) String() string {
	otlp := ""
	if b.Resolver > 0 {
		otlp = fmt.Sprintf(", OTLP sink %s (ok lane %s, error lane %s, resolver %s)", mib(laneFactor*(b.OTLPOKLane+b.OTLPErrLane)+b.Resolver),
			mib(laneFactor*b.OTLPOKLane), mib(laneFactor*b.OTLPErrLane), mib(b.Resolver))
	}
	return fmt.Sprintf("memory: need %s of the %s limit: kernel %s (rings %s + %s, maps %s for %d goroutines in slots + %d more and %d deep frames, programs %s); agent %s (Go %s: base %s, work %s, ok lane %s, error lane %s%s; SQLite %s)",
		mib(b.Need()), mib(b.Limit), mib(b.Kernel.Total()+b.Programs), mib(int64(b.Sizes.RingOK)), mib(int64(b.Sizes.RingErr)),
		mib(b.Kernel.Maps), b.Sizes.GoroutineSlots, b.Sizes.Goroutines, b.Sizes.Frames, mib(b.Programs),
		mib(b.GoLimit()+sqliteFactor*b.SQLite), mib(b.GoLimit()), mib(b.Base), mib(b.Work),
		mib(laneFactor*b.OKLane), mib(laneFactor*b.ErrLane), otlp, mib(sqliteFactor*b.SQLite))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// planBudget sizes the rings, maps, queues and SQLite cache for limit.
// What remains after the fixed costs (base, work, programs, the maps that
// don't scale) is shared: rings 27% (ok:error 2:1), goroutine state 36%
// (the slot table, then the goroutine map), frame map 4%, ok lane 17%,
// error lane 9%, SQLite 5%. At the default limit that keeps the rings at
// 16 and 8 MiB and leaves room for about 35,000 goroutines in traced calls at once (TestBurst20000 has 20,000).
// base is the Go memory the agent already holds (goMemoryInUse); it is a
// fixed cost, so a limit near the minimum may not fit a large base, and
// is then refused with the limit that would.
// okLane, when not 0, replaces the ok lane's share (--queue-memory) and
// must fit. With the OTLP sink (withOTLP), its resolver is a fixed cost
// and its lanes take a share of the queues' (ok 5% of the 17%, error 3%
// of the 9%): each sink has its own bounded queue inside the one limit.
func planBudget(limit, base int64, nfuncs int, okLane int64, withOTLP bool) (*Budget, error) {
	if limit < MinMemoryLimit {
		return nil, fmt.Errorf("memory limit %s is below the minimum of %s", mib(limit), mib(MinMemoryLimit))
	}
	b := &Budget{Limit: limit, Base: base, Work: workAllowance, Programs: programsAllowance}
	if withOTLP {
		b.Resolver = resolverAllowance
	}
	// The maps that don't scale with the limit: their cost with the
	// scaled ones at their smallest.
	small := uprobe.Sizes{RingOK: 1 << 16, RingErr: 1 << 16, Goroutines: 1, Frames: 1, GoroutineSlots: 1}
	k, err := uprobe.EstimateKernelMemory(nfuncs, small)
	if err != nil {
		return nil, err
	}
	fixed := b.Base + b.Work + b.Programs + b.Resolver + k.Total()
	avail := limit - fixed
	if avail < 16<<20 {
		return nil, fmt.Errorf("memory limit %s leaves %s after the fixed costs (Go base %s, work %s, BPF programs %s, fixed maps %s): raise it to at least %s",
			mib(limit), mib(max(avail, 0)), mib(b.Base), mib(b.Work), mib(b.Programs), mib(k.Total()), mib(fixed+16<<20))
	}
	share := func(pct int64) int64 { return avail * pct / 100 }
	rings := share(27)
	b.Sizes.RingOK = pow2Floor(rings * 2 / 3)
	b.Sizes.RingErr = pow2Floor(rings / 3)
	gCost, err := uprobe.ElementCost("goroutines")
	if err != nil {
		return nil, err
	}
	sCost, err := uprobe.ElementCost("gslots")
	if err != nil {
		return nil, err
	}
	fCost, err := uprobe.ElementCost("frames")
	if err != nil {
		return nil, err
	}
	// Goroutine state lives in the slot table first (preallocated, and
	// the fast path), then in the goroutine map; both come out of one
	// share. The table keeps its default size unless that would take more
	// than half the share.
	gShare := share(36)
	slots := uprobe.DefaultSizes.GoroutineSlots
	for slots > 1 && int64(slots)*sCost > gShare/2 {
		slots /= 2
	}
	b.Sizes.GoroutineSlots = slots
	b.Sizes.Goroutines = uint32(min((gShare-int64(slots)*sCost)/gCost, 1<<22))
	b.Sizes.Frames = uint32(min(share(4)/fCost, 1<<24))
	b.OKLane = share(17) / laneFactor
	b.ErrLane = share(9) / laneFactor
	if withOTLP {
		b.OTLPOKLane = share(5) / laneFactor
		b.OTLPErrLane = share(3) / laneFactor
		b.OKLane -= b.OTLPOKLane
		b.ErrLane -= b.OTLPErrLane
	}
	if okLane > 0 {
		b.OKLane = okLane
	}
	b.SQLite = share(5) / sqliteFactor
	if b.Kernel, err = uprobe.EstimateKernelMemory(nfuncs, b.Sizes); err != nil {
		return nil, err
	}
	if b.Need() > limit {
		return nil, fmt.Errorf("--queue-memory %s does not fit the memory limit %s: the agent would need %s; raise --memory-limit or lower --queue-memory",
			mib(b.OKLane), mib(limit), mib(b.Need()))
	}
	return b, nil
}

// pow2Floor is the largest power of two <= n, at least 64 KiB (a ring
// must be a power of two of pages).
func pow2Floor(n int64) uint32 {
	if n < 1<<16 {
		return 1 << 16
	}
	return uint32(1) << (bits.Len64(uint64(min(n, 1<<30))) - 1)
}

// goMemoryInUse is what the Go runtime holds from the OS and has not
// released, after a collection: the figure that runtime/debug's memory
// limit bounds.
func goMemoryInUse() int64 {
	debug.FreeOSMemory() // a collection, and what it freed goes back
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64())
}
