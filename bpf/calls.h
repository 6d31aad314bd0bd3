/* The probes on traced functions: obs_entry at a function's first
 * instruction, obs_ret at each of its RET instructions, and obs_leaf where
 * the first instruction is the RET. Never a return probe that swaps the
 * return address: Go's own stack walks crash on it.
 *   - an entry whose function and SP offset equal the top frame's is the
 *     re-execution after runtime.morestack, and is ignored;
 *   - a RET closes the frame with its SP offset, and any frame deeper than it
 *     was abandoned by a panic (or Goexit) and is closed as such;
 *   - an entry at or above an open frame's SP offset shows that frame is
 *     dead too.
 * A function without a RET (it only panics, ends in os.Exit, or loops
 * forever) has an entry site only: its frame is closed by the panic that
 * leaves it, by runtime.Goexit, or at the end of the trace, through the
 * same rules. */
#ifndef OBS_CALLS_H
#define OBS_CALLS_H

#include "errtext.h"
#include "frames.h"
#include "goroutine.h"

/* A function's entry: push a frame. */
static __always_inline void do_entry(struct gstate *gs, __u64 g, __u32 func_id, __u32 tgid,
				     __u64 sp_off, __u64 now)
{
	gs->last_ns = now;
	__u64 parent = gs->spawn_parent;
	__u32 depth = gs->depth;
	if (depth > 0) {
		struct frame *top = frame_get(gs, tgid, g, depth - 1);
		if (top) {
			if (top->sp_off == sp_off && top->func_id == func_id) {
				COUNT(morestack_reentry);
				return;
			}
			if (top->sp_off >= sp_off) {
				/* Open frames at or above this call are dead
				 * (the top one at least): a panic was recovered
				 * in an untraced frame. */
				close_dead(gs, tgid, g, now, sp_off, NO_FUNC);
				depth = gs->depth;
				top = depth > 0 ? frame_get(gs, tgid, g, depth - 1) : 0;
			}
			if (top)
				parent = top->id;
		}
	}

	struct frame f = {
	    .id = __sync_fetch_and_add(&next_id, 1),
	    .parent_id = parent,
	    .start_ns = now,
	    .sp_off = sp_off,
	    .func_id = func_id,
	};
	if (frame_put(gs, tgid, g, depth, &f)) {
		COUNT(map_full);
		lost_entry(func_id);
		return;
	}
	gs->depth = depth + 1;
}

/* Reads the error result at a RET; returns 1 when it is non-nil. */
static __always_inline int read_error(struct pt_regs *ctx, struct func_info *fi, __u64 *itab,
				      __u64 *data)
{
	if (fi->err_mode == OBS_ERR_REGS) {
		*itab = go_int_reg(ctx, fi->itab_reg);
		*data = go_int_reg(ctx, fi->data_reg);
	} else if (fi->err_mode == OBS_ERR_STACK) {
		__u64 w[2];
		if (bpf_probe_read_user(w, sizeof(w),
					(void *)(GO_SP(ctx) + (__s64)fi->stack_off))) {
			COUNT(read_fail);
			return 0;
		}
		*itab = w[0];
		*data = w[1];
	} else {
		return 0;
	}
	return *itab != 0;
}

/* The one place in the RET path where a returned error's itab and data
 * words are at hand: the call goes to the error ring with a snapshot of
 * the error's value (errtext.h), or, when the ring cannot take that
 * record, as the plain err_event with what read_iface reads. st (may be 0)
 * counts the drop when neither fits. */
static __always_inline void ret_error(struct frame *fr, __u32 tgid, __u64 goid, __u64 now,
				      __u8 status, __u64 itab, __u64 data, struct func_stats *st)
{
	struct call_event ce = {};
	fill_call(&ce, fr, tgid, goid, now, status);
	if (errtext_output(&ce, itab, data) == 0)
		return;
	struct err_event *e = err_reserve();
	if (!e) {
		if (st)
			st->dropped++;
		return;
	}
	e->call = ce;
	read_iface(e, itab, data);
	err_submit(e);
}

/* A RET whose frame is not open: the call began before the entries were
 * armed, or after detach disarmed them. Neither is ever a record. */
static __always_inline void unmatched(void)
{
	if (phase == OBS_PHASE_DRAINING)
		COUNT(drain_ret);
	else
		COUNT(unmatched_ret);
}

/* A RET: pop the frame and send the call. */
static __always_inline void do_ret(struct pt_regs *ctx, struct gstate *gs, __u64 g, __u32 func_id,
				   __u32 tgid, __u64 sp_off, __u64 now)
{
	if (gs->depth == 0) {
		unmatched();
		return;
	}
	gs->last_ns = now;

	struct frame *f = frame_get(gs, tgid, g, gs->depth - 1);
	if (f && (f->sp_off > sp_off || (f->sp_off == sp_off && f->func_id != func_id))) {
		/* Frames deeper than the one returning (or another function's
		 * at its level) were unwound by a panic that this frame, or an
		 * untraced one below it, recovered. */
		close_dead(gs, tgid, g, now, sp_off, func_id);
		f = gs->depth > 0 ? frame_get(gs, tgid, g, gs->depth - 1) : 0;
	}
	if (!f || f->sp_off != sp_off || f->func_id != func_id) {
		unmatched();
		return;
	}

	struct frame fr = *f;
	frame_drop(tgid, g, gs->depth - 1);
	gs->depth--;

	__u64 itab = 0, data = 0;
	__u8 status = OBS_OK;
	struct func_info *fi = bpf_map_lookup_elem(&funcs, &func_id);
	if (fi && fi->err_mode != OBS_ERR_NONE && read_error(ctx, fi, &itab, &data))
		status = OBS_ERROR;

	struct func_stats *st = account(func_id, status, now - fr.start_ns);
	if (status == OBS_OK) {
		if (!fr.keep && fi && !fi->sample_all &&
		    bpf_get_prandom_u32() >= fi->sample_thresh) {
			if (st)
				st->sampled++;
			return;
		}
		send_ok(&fr, tgid, gs->goid, now, st);
		return;
	}

	if (gs->depth > 0)
		keep_ancestors(tgid, g, gs->depth);
	ret_error(&fr, tgid, gs->goid, now, status, itab, data, st);
}

/* A probe on a traced function: the site's function and, once the target
 * check passes, the running goroutine's fresh state (created at an entry). */
struct site {
	__u64 g;
	__u64 sp_off;
	__u32 tgid;
	__u32 func_id;
	struct gstate *gs;
};

/* Notes the load bias of process tgid at an entry of function fid, once. */
static __always_inline void note_bias(struct pt_regs *ctx, __u32 tgid, __u32 fid)
{
	if (bpf_map_lookup_elem(&pie_bias, &tgid))
		return;
	struct func_info *fi = bpf_map_lookup_elem(&funcs, &fid);
	if (!fi)
		return;
	__u64 bias = SITE_IP(ctx) - fi->entry;
	bpf_map_update_elem(&pie_bias, &tgid, &bias, BPF_NOEXIST);
}

/* Fills s; returns 0 when the hit is not for this session (another
 * process, or a site of another generation), and leaves s->gs 0 when the
 * goroutine has no state (and create was 0) or could not get one. */
static __always_inline int site_hit(struct pt_regs *ctx, int create, struct site *s)
{
	s->tgid = traced_tgid();
	if (!s->tgid)
		return 0;
	__s64 fid = site_func(ctx);
	if (fid < 0)
		return 0;
	s->func_id = fid;
	if (pie_file && create)
		note_bias(ctx, s->tgid, fid);
	s->g = GO_G(ctx);
	s->gs = goroutine(ctx, s->tgid, create, &s->sp_off);
	return 1;
}

SEC("uprobe.multi")
int obs_entry(struct pt_regs *ctx)
{
	struct site s;
	if (phase != OBS_PHASE_LIVE || !site_hit(ctx, 1, &s))
		return 0;
	if (!s.gs) {
		lost_entry(s.func_id);
		return 0;
	}
	do_entry(s.gs, s.g, s.func_id, s.tgid, s.sp_off, bpf_ktime_get_ns());
	return 0;
}

SEC("uprobe.multi")
int obs_ret(struct pt_regs *ctx)
{
	struct site s;
	if (!site_hit(ctx, 0, &s))
		return 0;
	if (!s.gs) {
		unmatched();
		return 0;
	}
	do_ret(ctx, s.gs, s.g, s.func_id, s.tgid, s.sp_off, bpf_ktime_get_ns());
	return 0;
}

/* A function whose first instruction is its RET (a frameless leaf such as
 * a value-receiver getter): entry and return are one site, and two probes
 * there would run in no defined order. */
SEC("uprobe.multi")
int obs_leaf(struct pt_regs *ctx)
{
	struct site s;
	if (phase != OBS_PHASE_LIVE || !site_hit(ctx, 1, &s) || !s.gs)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	do_entry(s.gs, s.g, s.func_id, s.tgid, s.sp_off, now);
	do_ret(ctx, s.gs, s.g, s.func_id, s.tgid, s.sp_off, now);
	return 0;
}

#endif
