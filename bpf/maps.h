/* Every map of obs-agent's programs but errtext.h's two, which belong to
 * that concern alone. The sizes below are defaults for the object file;
 * user space sets the real ones (MaxEntries on the map specs, internal/uprobe
 * Sizes) before loading. */
#ifndef OBS_MAPS_H
#define OBS_MAPS_H

#include "obs.h"
#include <bpf/bpf_helpers.h>

/* Ok calls. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} ring_ok SEC(".maps");

/* Errors, panics, unfinished calls and panic values: they never compete
 * with ok calls for ring space. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} ring_err SEC(".maps");

/* Function id -> how to trace it. An array: its lookups are inlined. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* the number of functions */
	__type(key, __u32);
	__type(value, struct func_info);
} funcs SEC(".maps");

/* tgid -> load bias of the traced file in that process, when pie_file:
 * noted at its first traced entry (the probed address less the entry's
 * static one). An LRU: the entries of processes that exited go, oldest
 * first, and user space reads a process's bias while its records are
 * decoded, which may be after it exited. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} pie_bias SEC(".maps");

/* Function id -> aggregates, per CPU so no probe waits on another. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1); /* the number of functions */
	__type(key, __u32);
	__type(value, struct func_stats);
} fstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} health SEC(".maps");

/* Goroutine state, created at a goroutine's first traced call (or at `go`
 * inside one) and deleted when it exits, lives in one of two places. First
 * choice is the slot table: an array indexed by a hash of g, so finding a
 * goroutine costs no helper call (array lookups are inlined), which is
 * about a tenth of a traced call's BPF time. Its size is set by user space
 * (a power of two; preallocated, so kept small). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gslot);
} gslots SEC(".maps");

/* Then, for goroutines whose slots are taken (or when the table is off),
 * this hash map. Not preallocated: most programs have far fewer live
 * goroutines than the bound. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gkey);
	__type(value, struct gstate);
} goroutines SEC(".maps");

/* Frames deeper than OBS_INLINE_FRAMES. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fkey);
	__type(value, struct frame);
} frames SEC(".maps");

/* A zeroed gstate to insert from: it is too big for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gstate);
} gstate_zero SEC(".maps");

/* Between newproc1's entry and its RET, on one thread (it runs on the
 * system stack and cannot be rescheduled), the parent call of the goroutine
 * being created. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, __u64);
	__type(value, __u64);
} spawning SEC(".maps");

/* The trap a thread's newest-generation program handled while two
 * generations were accepted (site_func, helpers.h), by thread (pid_tgid):
 * the older generation's program on the same trap, which runs next, skips
 * it. Not a record, so its struct is not shared with Go. An LRU, so it
 * never fills: a mark evicted before the older program reads it lets that
 * one trap be handled twice (the entry is then taken for a morestack
 * re-entry, the RET counted as unmatched), never missed. */
struct gen_mark {
	__u64 ip;
	__u32 gen;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct gen_mark);
} gen_marks SEC(".maps");

#endif
