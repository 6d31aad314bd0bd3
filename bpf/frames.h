/* Each goroutine's stack of open frames: the innermost inline in its state,
 * deeper ones in the frames map. A frame is identified by
 * g.stack.hi - SP, which is the same at entry and at RET and survives stack
 * copies. Frames that will never see their RET (unwound by a panic or
 * runtime.Goexit) are closed here. */
#ifndef OBS_FRAMES_H
#define OBS_FRAMES_H

#include "records.h"
#include "goroutine.h"

/* The frame at depth d of a goroutine: inline in its state, or in the
 * frames map when deeper. */
static __always_inline struct frame *frame_get(struct gstate *gs, __u32 tgid, __u64 g, __u32 d)
{
	if (d < OBS_INLINE_FRAMES)
		return &gs->frames[d & (OBS_INLINE_FRAMES - 1)];
	struct fkey k = {.tgid = tgid, .depth = d, .g = g};
	return bpf_map_lookup_elem(&frames, &k);
}

static __always_inline int frame_put(struct gstate *gs, __u32 tgid, __u64 g, __u32 d,
				     struct frame *f)
{
	if (d < OBS_INLINE_FRAMES) {
		gs->frames[d & (OBS_INLINE_FRAMES - 1)] = *f;
		return 0;
	}
	struct fkey k = {.tgid = tgid, .depth = d, .g = g};
	return bpf_map_update_elem(&frames, &k, f, BPF_ANY);
}

static __always_inline void frame_drop(__u32 tgid, __u64 g, __u32 d)
{
	if (d < OBS_INLINE_FRAMES)
		return;
	struct fkey k = {.tgid = tgid, .depth = d, .g = g};
	bpf_map_delete_elem(&frames, &k);
}

/* Closes a frame that will never reach its RET. */
static __always_inline void close_abandoned(struct frame *f, __u32 tgid, __u64 goid, __u64 now,
					    __u8 status)
{
	struct func_stats *st = account(f->func_id, status, now - f->start_ns);
	struct err_event *e = err_reserve();
	if (!e) {
		if (st)
			st->dropped++;
		return;
	}
	fill_call(&e->call, f, tgid, goid, now, status);
	err_submit(e);
	COUNT(abandoned);
}

#define NO_FUNC 0xffffffff

struct unwind_ctx {
	__u64 g;
	__u64 now;
	__u64 sp_off; /* frames deeper than this go */
	__u32 tgid;
	__u32 depth;
	__u32 keep_func; /* a frame at sp_off stays only if it is this function */
	__u32 status;
};

static long unwind_one(__u64 i, void *data)
{
	struct unwind_ctx *u = data;
	if (u->depth == 0)
		return 1;
	struct gstate *gs = gstate_find(u->tgid, u->g);
	if (!gs)
		return 1;
	struct frame *f = frame_get(gs, u->tgid, u->g, u->depth - 1);
	if (!f) {
		/* Lost frame (map was full): drop the level and go on. */
		u->depth--;
		return 0;
	}
	if (f->sp_off < u->sp_off || (f->sp_off == u->sp_off && f->func_id == u->keep_func))
		return 1;
	close_abandoned(f, u->tgid, gs->goid, u->now, u->status);
	frame_drop(u->tgid, u->g, u->depth - 1);
	u->depth--;
	return 0;
}

/* Closes every open frame of the goroutine that is deeper than sp_off, and
 * one at sp_off unless it belongs to keep_func. (Its callers must not branch
 * on how many it closed: that trips the 6.18 verifier's precision tracking
 * through bpf_loop callbacks, which fails the load with EFAULT.) */
static __always_inline void unwind(struct gstate *gs, __u32 tgid, __u64 g, __u64 now, __u64 sp_off,
				   __u32 keep_func, __u8 status)
{
	struct unwind_ctx u = {
	    .g = g,
	    .now = now,
	    .sp_off = sp_off,
	    .tgid = tgid,
	    .depth = gs->depth,
	    .keep_func = keep_func,
	    .status = status,
	};
	bpf_loop(OBS_MAX_UNWIND, unwind_one, &u, 0);
	gs->depth = u.depth;
}

struct keep_ctx {
	__u64 g;
	__u32 tgid;
	__u32 depth;
};

static long keep_one(__u64 i, void *data)
{
	struct keep_ctx *k = data;
	if (k->depth == 0)
		return 1;
	struct gstate *gs = gstate_find(k->tgid, k->g);
	if (!gs)
		return 1;
	k->depth--;
	struct frame *f = frame_get(gs, k->tgid, k->g, k->depth);
	if (!f)
		return 0;
	if (f->keep)
		return 1; /* and so are all above it */
	f->keep = 1;
	return 0;
}

/* Marks every open ancestor of a failed call so sampling never drops it:
 * an error's chain of parents is always recorded. */
static __always_inline void keep_ancestors(__u32 tgid, __u64 g, __u32 depth)
{
	struct keep_ctx k = {.g = g, .tgid = tgid, .depth = depth};
	bpf_loop(OBS_MAX_UNWIND, keep_one, &k, 0);
}

/* Closes the frames above sp_off (and one at it, unless keep_func's) that
 * a panic, or an untraced recover, left dead; their status is panic when
 * the goroutine was panicking. */
static __always_inline void close_dead(struct gstate *gs, __u32 tgid, __u64 g, __u64 now,
				       __u64 sp_off, __u32 keep_func)
{
	__u8 st = gs->panic_seq ? OBS_PANIC : OBS_UNFINISHED;
	unwind(gs, tgid, g, now, sp_off, keep_func, st);
	gs->panic_seq = 0;
	/* The panicked frames' ancestors are never sampled out. */
	if (st == OBS_PANIC && gs->depth > 0)
		keep_ancestors(tgid, g, gs->depth);
}

#endif
