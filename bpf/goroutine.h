/* Per-goroutine state: found by the g pointer in a register, with goid and
 * the stack bounds cached so that the common probe reads no user memory (a
 * bpf_probe_read_user costs ~200 ns here). */
#ifndef OBS_GOROUTINE_H
#define OBS_GOROUTINE_H

#include "helpers.h"
#include "regs.h"

/* Reads goid and the stack bounds of g into its state: g.stack (the first
 * field) through goid in one read when goid is at byte 152 or 160, as in
 * every Go version verified so far; another offset costs a second read. */
static __always_inline int refresh(struct gstate *gs, __u64 g)
{
	__u64 gw[OBS_G_READ_WORDS];

	if (bpf_probe_read_user(gw, sizeof(gw), (void *)g)) {
		COUNT(read_fail);
		return -1;
	}
	gs->stack_lo = gw[0];
	gs->stack_hi = gw[1];
	if (goid_offset == 152)
		gs->goid = gw[19];
	else if (goid_offset == 160)
		gs->goid = gw[20];
	else if (bpf_probe_read_user(&gs->goid, sizeof(gs->goid), (void *)(g + goid_offset))) {
		COUNT(read_fail);
		return -1;
	}
	gs->stale = 0;
	return 0;
}

/* Makes gs a goroutine's state as new. Frames at or above depth are never
 * read, so only the header is reset; stale forces a refresh of goid and
 * the stack bounds. */
static __always_inline void gstate_reset(struct gstate *gs)
{
	gs->goid = 0;
	gs->stack_lo = 0;
	gs->stack_hi = 0;
	gs->spawn_parent = 0;
	gs->last_ns = 0;
	gs->panic_seq = 0;
	gs->depth = 0;
	gs->stale = 1;
}

/* The i-th slot tried for g: a multiplicative hash of g (g structs are
 * allocated at multiples of their size class, so their low bits carry
 * little), then linear probing. */
static __always_inline struct gslot *gslot_at(__u64 g, __u32 i)
{
	__u32 idx = ((__u32)(((g >> 3) * 0x9E3779B97F4A7C15ULL) >> 32) + i) & gslot_mask;
	return bpf_map_lookup_elem(&gslots, &idx);
}

/* The state of goroutine g of process tgid, or 0. */
static __always_inline struct gstate *gstate_find(__u32 tgid, __u64 g)
{
	if (gslot_mask) {
		for (__u32 i = 0; i < OBS_SLOT_PROBES; i++) {
			struct gslot *s = gslot_at(g, i);
			if (!s)
				break;
			if (s->g == g)
				return &s->st;
			/* A slot never used ends the chain: g would be in it
			 * or before it. */
			if (s->g == OBS_GSLOT_EMPTY)
				return 0;
		}
	}
	struct gkey k = {.tgid = tgid, .g = g};
	return bpf_map_lookup_elem(&goroutines, &k);
}

/* Gives goroutine g a fresh state: the first free slot of its chain (taken
 * with a compare-and-swap, as another goroutine may want it at once), or an
 * entry of the hash map. */
static __always_inline struct gstate *gstate_new(__u32 tgid, __u64 g)
{
	if (gslot_mask) {
		for (__u32 i = 0; i < OBS_SLOT_PROBES; i++) {
			struct gslot *s = gslot_at(g, i);
			if (!s)
				break;
			__u64 old = s->g;
			if (old != OBS_GSLOT_EMPTY && old != OBS_GSLOT_FREED)
				continue;
			if (__sync_val_compare_and_swap(&s->g, old, g) != old)
				continue;
			gstate_reset(&s->st);
			return &s->st;
		}
	}
	__u32 zk = 0;
	struct gstate *zero = bpf_map_lookup_elem(&gstate_zero, &zk);
	if (!zero)
		return 0;
	struct gkey k = {.tgid = tgid, .g = g};
	if (bpf_map_update_elem(&goroutines, &k, zero, BPF_ANY)) {
		COUNT(map_full);
		return 0;
	}
	return bpf_map_lookup_elem(&goroutines, &k);
}

/* Forgets goroutine g: its g will be reused by another goroutine. */
static __always_inline void gstate_del(__u32 tgid, __u64 g)
{
	if (gslot_mask) {
		for (__u32 i = 0; i < OBS_SLOT_PROBES; i++) {
			struct gslot *s = gslot_at(g, i);
			if (!s)
				break;
			if (s->g == g) {
				s->g = OBS_GSLOT_FREED;
				return;
			}
			if (s->g == OBS_GSLOT_EMPTY)
				return;
		}
	}
	struct gkey k = {.tgid = tgid, .g = g};
	bpf_map_delete_elem(&goroutines, &k);
}

/* The state of the goroutine running the probe, fresh: its cached stack
 * bounds contain SP. With create, a goroutine seen for the first time gets
 * a state. *sp_off is g.stack.hi - SP. */
static __always_inline struct gstate *goroutine(struct pt_regs *ctx, __u32 tgid, int create,
						__u64 *sp_off)
{
	__u64 g = GO_G(ctx);
	if (!g)
		return 0;
	struct gstate *gs = gstate_find(tgid, g);
	if (!gs) {
		if (!create)
			return 0;
		gs = gstate_new(tgid, g);
		if (!gs)
			return 0;
	}
	__u64 sp = GO_SP(ctx);
	if (gs->stale || sp <= gs->stack_lo || sp > gs->stack_hi) {
		if (refresh(gs, g))
			return 0;
	}
	*sp_off = gs->stack_hi - sp;
	return gs;
}

#endif
