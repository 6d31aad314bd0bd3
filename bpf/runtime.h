/* Probes on the Go runtime: they link goroutines to the call that spawned
 * them (runtime.newproc1), record panic values (runtime.gopanic), mark
 * moved stacks (runtime.copystack) and close what a goroutine leaves open
 * when it exits (runtime.goexit1). */
#ifndef OBS_RUNTIME_H
#define OBS_RUNTIME_H

#include "errtext.h"
#include "frames.h"
#include "goroutine.h"

/* runtime.newproc1(fn, callergp, ...) runs on the system stack, so R14 is
 * g0 here: the creating goroutine comes from the callergp argument. */
SEC("uprobe.multi")
int obs_newproc_entry(struct pt_regs *ctx)
{
	__u32 tgid = traced_tgid();
	if (!tgid)
		return 0;
	__u64 callergp = go_int_reg(ctx, newproc_callergp_reg);
	struct gstate *gs = gstate_find(tgid, callergp);
	if (!gs)
		return 0;
	__u64 parent = gs->spawn_parent;
	if (gs->depth > 0) {
		struct frame *f = frame_get(gs, tgid, callergp, gs->depth - 1);
		if (f)
			parent = f->id;
	}
	if (!parent)
		return 0;
	__u64 tid = bpf_get_current_pid_tgid();
	bpf_map_update_elem(&spawning, &tid, &parent, BPF_ANY);
	return 0;
}

/* At newproc1's RET the new g is the result. A g is reused after its
 * goroutine exits, so its state is reset here whatever happens. */
SEC("uprobe.multi")
int obs_newproc_ret(struct pt_regs *ctx)
{
	__u32 tgid = traced_tgid();
	if (!tgid)
		return 0;
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 newg = go_int_reg(ctx, 0);
	__u64 *parent = bpf_map_lookup_elem(&spawning, &tid);
	if (!parent) {
		gstate_del(tgid, newg);
		return 0;
	}
	__u64 p = *parent;
	bpf_map_delete_elem(&spawning, &tid);
	if (!newg)
		return 0;
	/* A state left by an earlier goroutine on this g (its exit was not
	 * seen) is reset. */
	struct gstate *gs = gstate_find(tgid, newg);
	if (gs)
		gstate_reset(gs);
	else
		gs = gstate_new(tgid, newg);
	if (!gs)
		return 0;
	gs->spawn_parent = p;
	gs->stale = 1;
	gs->last_ns = bpf_ktime_get_ns();
	COUNT(spawn_links);
	return 0;
}

/* runtime.copystack(gp, newsize) moves gp's stack: its cached bounds are
 * stale. (A moved stack is also caught by SP leaving the cached bounds, but
 * a new stack could overlap the old one.) */
SEC("uprobe.multi")
int obs_copystack(struct pt_regs *ctx)
{
	__u32 tgid = traced_tgid();
	if (!tgid)
		return 0;
	struct gstate *gs = gstate_find(tgid, go_int_reg(ctx, 0));
	if (gs)
		gs->stale = 1;
	return 0;
}

/* runtime.gopanic(e any): remember that the goroutine is panicking and send
 * the panic value. */
SEC("uprobe.multi")
int obs_gopanic(struct pt_regs *ctx)
{
	__u32 tgid = traced_tgid();
	__u64 sp_off;
	if (!tgid)
		return 0;
	struct gstate *gs = goroutine(ctx, tgid, 1, &sp_off);
	if (!gs)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	gs->panic_seq++;
	gs->last_ns = now;
	/* The panic value with a snapshot of what it points to (errtext.h);
	 * the plain record below is the fallback. */
	struct call_event ce = {
	    .goid = gs->goid,
	    .start_ns = now,
	    .end_ns = now,
	    .tgid = tgid,
	    .status = OBS_PANIC,
	};
	if (errtext_output_panic(&ce, go_int_reg(ctx, 0), go_int_reg(ctx, 1)) == 0)
		return 0;
	struct err_event *e = err_reserve();
	if (!e)
		return 0;
	e->call.goid = gs->goid;
	e->call.tgid = tgid;
	e->call.start_ns = now;
	e->call.end_ns = now;
	e->call.status = OBS_PANIC;
	e->kind = OBS_KIND_PANIC_VALUE;
	read_iface(e, go_int_reg(ctx, 0), go_int_reg(ctx, 1));
	err_submit(e);
	return 0;
}

/* runtime.goexit1 runs on a goroutine that has finished: close what it left
 * open (runtime.Goexit unwinds without RETs) and forget it, since its g
 * will be reused. */
SEC("uprobe.multi")
int obs_goexit(struct pt_regs *ctx)
{
	__u32 tgid = traced_tgid();
	if (!tgid)
		return 0;
	__u64 g = GO_G(ctx);
	struct gstate *gs = gstate_find(tgid, g);
	if (!gs)
		return 0;
	if (gs->depth > 0)
		unwind(gs, tgid, g, bpf_ktime_get_ns(), 0, NO_FUNC,
		       gs->panic_seq ? OBS_PANIC : OBS_UNFINISHED);
	gstate_del(tgid, g);
	return 0;
}

#endif
