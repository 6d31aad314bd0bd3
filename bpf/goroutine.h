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

static __always_inline struct gstate *gstate_new(struct gkey *k)
{
	__u32 zk = 0;
	struct gstate *zero = bpf_map_lookup_elem(&gstate_zero, &zk);
	if (!zero)
		return 0;
	if (bpf_map_update_elem(&goroutines, k, zero, BPF_ANY)) {
		COUNT(map_full);
		return 0;
	}
	return bpf_map_lookup_elem(&goroutines, k);
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
	struct gkey k = {.tgid = tgid, .g = g};
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &k);
	if (!gs) {
		if (!create)
			return 0;
		gs = gstate_new(&k);
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
