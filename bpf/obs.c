//go:build ignore

/* obs-agent's uprobe programs for Go functions.
 *
 * obs_entry runs at a function's first instruction, obs_ret at each of its
 * RET instructions, and obs_leaf where the first instruction is the RET.
 * Never a return probe that swaps the return address: Go's own stack walks
 * crash on it (NOTES §1). Each goroutine has a
 * stack of open frames: the innermost ones inline in its state in the
 * goroutines map, deeper ones in the frames map. A frame is identified by
 * g.stack.hi - SP, which is the same at entry and at RET and survives stack
 * copies, so:
 *   - an entry whose function and SP offset equal the top frame's is the
 *     re-execution after runtime.morestack, and is ignored (NOTES §2);
 *   - a RET closes the frame with its SP offset, and any frame deeper than it
 *     was abandoned by a panic (or Goexit) and is closed as such;
 *   - an entry at or above an open frame's SP offset shows that frame is
 *     dead too.
 * Goroutine state is keyed by the g pointer (R14 on amd64, X28 on arm64)
 * and caches goid and the stack bounds, so the common probe reads no user
 * memory at all: a bpf_probe_read_user costs ~200 ns here.
 * Runtime hooks link goroutines to the call that spawned them
 * (runtime.newproc1), record panic values (runtime.gopanic), mark moved
 * stacks (runtime.copystack) and close what a goroutine leaves open when it
 * exits (runtime.goexit1). */

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "obs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space before loading. */
volatile const __u64 goid_offset = 152;
volatile const __u32 newproc_callergp_reg = 1;
/* The traced process; 0 traces whatever the links' pid filter lets in.
 * Checked here as well because the uprobe_multi pid filter is only
 * reliable from Linux 6.10. */
volatile const __u32 target_tgid = 0;

/* Keep the record types in BTF, so bpf2go generates their Go twins. */
const struct call_event *_call_event __attribute__((unused));
const struct err_event *_err_event __attribute__((unused));

/* Site generation. Function sites are attached with cookie
 * (generation << 32 | function id); to pause or resume functions user space
 * attaches a new generation beside the old one, flips active_gen, then
 * detaches the old, so each trap is handled once. */
__u32 active_gen = 0;

/* The function id of a site's cookie, or -1 when the site belongs to
 * another generation. */
static __always_inline __s64 site_func(void *ctx)
{
	__u64 c = bpf_get_attach_cookie(ctx);
	if ((__u32)(c >> 32) != active_gen)
		return -1;
	return (__u32)c;
}

/* Call ids: user space starts them at session<<40 so they are unique in the
 * store. */
__u64 next_id = 1;

#if defined(__TARGET_ARCH_x86)
#define GO_G(ctx)  ((ctx)->r14)
#define GO_SP(ctx) ((ctx)->sp)
/* The Go ABI's integer registers, in order. Copied out first: the verifier
 * refuses a context access at a variable offset. */
static __always_inline __u64 go_int_reg(struct pt_regs *ctx, __u32 i)
{
	__u64 r[9] = {ctx->ax, ctx->bx, ctx->cx,  ctx->di, ctx->si,
		      ctx->r8, ctx->r9, ctx->r10, ctx->r11};
	if (i < 9)
		return r[i];
	return 0;
}
#elif defined(__TARGET_ARCH_arm64)
#define GO_G(ctx)  ((ctx)->regs[28])
#define GO_SP(ctx) ((ctx)->sp)
static __always_inline __u64 go_int_reg(struct pt_regs *ctx, __u32 i)
{
	__u64 r[16];
	__builtin_memcpy(r, ctx->regs, sizeof(r));
	if (i < 16)
		return r[i];
	return 0;
}
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} ring_ok SEC(".maps");

/* Errors and panics never compete with ok calls for ring space. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} ring_err SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u32);
	__type(value, struct func_info);
} funcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1); /* resized by user space */
	__type(key, __u32);
	__type(value, struct func_stats);
} fstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} health SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gkey);
	__type(value, struct gstate);
} goroutines SEC(".maps");

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

static __always_inline struct counters *health_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&health, &zero);
}

#define COUNT(field)                                                                               \
	do {                                                                                       \
		struct counters *__c = health_get();                                               \
		if (__c)                                                                           \
			__c->field++;                                                              \
	} while (0)

/* Returns the current process's tgid, or 0 when it is not the target. */
static __always_inline __u32 traced_tgid(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (target_tgid && tgid != target_tgid)
		return 0;
	return tgid;
}

/* Waking the reader costs the traced thread several microseconds, so a
 * record wakes it only once the ring holds this much; the reader also polls
 * every few milliseconds (internal/agent). */
#define OK_WAKE_BYTES  (1 << 20)
#define ERR_WAKE_BYTES (64 << 10)

static __always_inline __u64 wake_flag(void *ring, __u64 threshold)
{
	return bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) >= threshold ? BPF_RB_FORCE_WAKEUP
								       : BPF_RB_NO_WAKEUP;
}

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

/* Words of runtime.g read at once: g.stack (the first field) through goid,
 * which is at byte 152 or 160 in every Go version verified so far; another
 * offset costs a second read. */
#define G_READ_WORDS 21

/* Reads goid and the stack bounds of g into its state. */
static __always_inline int refresh(struct gstate *gs, __u64 g)
{
	__u64 gw[G_READ_WORDS];

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

static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 r = 0;
	if (v == 0)
		return 0;
	if (v >> 32) {
		v >>= 32;
		r += 32;
	}
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1) {
		r += 1;
	}
	return r + 1; /* 2^(b-1) <= v < 2^b */
}

static __always_inline struct func_stats *account(__u32 func_id, __u8 status, __u64 dur)
{
	struct func_stats *st = bpf_map_lookup_elem(&fstats, &func_id);
	if (!st)
		return 0;
	st->calls++;
	if (status == OBS_ERROR)
		st->errors++;
	else if (status == OBS_PANIC)
		st->panics++;
	else if (status == OBS_UNFINISHED)
		st->unfinished++;
	st->total_ns += dur;
	if (dur > st->max_ns)
		st->max_ns = dur;
	__u32 b = log2_bucket(dur);
	if (b < OBS_HIST_BUCKETS)
		st->hist[b]++;
	return st;
}

static __always_inline void fill_call(struct call_event *e, struct frame *f, __u32 tgid, __u64 goid,
				      __u64 now, __u8 status)
{
	e->id = f->id;
	e->parent_id = f->parent_id;
	e->goid = goid;
	e->start_ns = f->start_ns;
	e->end_ns = now;
	e->tgid = tgid;
	e->func_id = f->func_id;
	e->status = status;
}

/* Reads a Go string (ptr, len) into e->text, bounded. */
static __always_inline void read_text(struct err_event *e, __u64 ptr, __u64 len)
{
	if (!ptr || !len || len > (1ULL << 30))
		return;
	__u32 n = OBS_TEXT_MAX;
	if (len < OBS_TEXT_MAX)
		n = len;
	else if (len > OBS_TEXT_MAX)
		e->truncated = 1;
	if (bpf_probe_read_user(e->text, n, (void *)ptr) == 0)
		e->text_len = n;
}

/* Fills the value part of an err_event from an interface (type word, data
 * word): the type address, the two words behind the data pointer, and, when
 * those words look like a string header, the bytes of that string. The
 * string behind the data pointer is what *errors.errorString,
 * *fmt.wrapError, *fmt.wrapErrors and a string panic value all hold; user
 * space keeps the text only for types it knows hold one. */
static __always_inline void read_iface(struct err_event *e, __u64 type_addr, __u64 data)
{
	__u64 words[2] = {};

	e->type_addr = type_addr;
	e->data_addr = data;
	if (!data)
		return;
	if (bpf_probe_read_user(words, sizeof(words), (void *)data)) {
		COUNT(read_fail);
		return;
	}
	e->word0 = words[0];
	e->word1 = words[1];
	read_text(e, words[0], words[1]);
}

static __always_inline struct err_event *err_reserve(void)
{
	struct err_event *e = bpf_ringbuf_reserve(&ring_err, sizeof(*e), 0);
	if (!e) {
		COUNT(ring_err_full);
		return 0;
	}
	__builtin_memset(&e->call, 0, sizeof(e->call));
	e->type_addr = 0;
	e->word0 = 0;
	e->word1 = 0;
	e->data_addr = 0;
	e->text_len = 0;
	e->truncated = 0;
	e->kind = OBS_KIND_CALL;
	e->_pad = 0;
	return e;
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
	bpf_ringbuf_submit(e, wake_flag(&ring_err, ERR_WAKE_BYTES));
	COUNT(abandoned);
}

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
	struct gkey gk = {.tgid = u->tgid, .g = u->g};
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &gk);
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

#define NO_FUNC 0xffffffff

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
	struct gkey gk = {.tgid = k->tgid, .g = k->g};
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &gk);
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
	bpf_loop(1 << 16, keep_one, &k, 0);
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
	bpf_loop(1 << 16, unwind_one, &u, 0);
	gs->depth = u.depth;
}

/* A call whose frame could not be kept (a map is full, or g unreadable) is
 * counted as made and dropped, so that the loss is shown. */
static __always_inline void lost_entry(__u32 func_id)
{
	struct func_stats *st = bpf_map_lookup_elem(&fstats, &func_id);
	if (st) {
		st->calls++;
		st->dropped++;
	}
}

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
				__u8 st = gs->panic_seq ? OBS_PANIC : OBS_UNFINISHED;
				unwind(gs, tgid, g, now, sp_off, NO_FUNC, st);
				gs->panic_seq = 0;
				if (st == OBS_PANIC && gs->depth > 0)
					keep_ancestors(tgid, g, gs->depth);
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
	if (fi->err_mode == 1) {
		*itab = go_int_reg(ctx, fi->itab_reg);
		*data = go_int_reg(ctx, fi->data_reg);
	} else if (fi->err_mode == 2) {
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

/* The text of returned errors: read plans and the snapshot record. */
#include "errtext.h"

/* A RET: pop the frame and send the call. */
static __always_inline void do_ret(struct pt_regs *ctx, struct gstate *gs, __u64 g, __u32 func_id,
				   __u32 tgid, __u64 sp_off, __u64 now)
{
	if (gs->depth == 0) {
		COUNT(unmatched_ret);
		return;
	}
	gs->last_ns = now;

	struct frame *f = frame_get(gs, tgid, g, gs->depth - 1);
	if (f && (f->sp_off > sp_off || (f->sp_off == sp_off && f->func_id != func_id))) {
		/* Frames deeper than the one returning (or another function's
		 * at its level) were unwound by a panic that this frame, or an
		 * untraced one below it, recovered. */
		__u8 st = gs->panic_seq ? OBS_PANIC : OBS_UNFINISHED;
		unwind(gs, tgid, g, now, sp_off, func_id, st);
		gs->panic_seq = 0;
		/* The panicked frames' ancestors, this one included, are
		 * never sampled out. */
		if (st == OBS_PANIC && gs->depth > 0)
			keep_ancestors(tgid, g, gs->depth);
		f = gs->depth > 0 ? frame_get(gs, tgid, g, gs->depth - 1) : 0;
	}
	if (!f || f->sp_off != sp_off || f->func_id != func_id) {
		COUNT(unmatched_ret);
		return;
	}

	struct frame fr = *f;
	frame_drop(tgid, g, gs->depth - 1);
	gs->depth--;

	__u64 itab = 0, data = 0;
	__u8 status = OBS_OK;
	struct func_info *fi = bpf_map_lookup_elem(&funcs, &func_id);
	if (fi && read_error(ctx, fi, &itab, &data))
		status = OBS_ERROR;

	struct func_stats *st = account(func_id, status, now - fr.start_ns);
	if (status == OBS_OK) {
		if (!fr.keep && fi && !fi->sample_all &&
		    bpf_get_prandom_u32() >= fi->sample_thresh) {
			if (st)
				st->sampled++;
			return;
		}
		struct call_event *e = bpf_ringbuf_reserve(&ring_ok, sizeof(*e), 0);
		if (!e) {
			COUNT(ring_ok_full);
			if (st)
				st->dropped++;
			return;
		}
		fill_call(e, &fr, tgid, gs->goid, now, status);
		__builtin_memset(e->_pad, 0, sizeof(e->_pad));
		bpf_ringbuf_submit(e, wake_flag(&ring_ok, OK_WAKE_BYTES));
		return;
	}

	if (gs->depth > 0)
		keep_ancestors(tgid, g, gs->depth);
	/* errtext.h hook (error path only): send the call with a snapshot of
	 * its error's value; the plain record below is the fallback when the
	 * ring cannot take the larger one. */
	struct call_event ce = {};
	fill_call(&ce, &fr, tgid, gs->goid, now, status);
	if (errtext_output(&ce, itab, data) == 0)
		return;
	struct err_event *e = err_reserve();
	if (!e) {
		if (st)
			st->dropped++;
		return;
	}
	fill_call(&e->call, &fr, tgid, gs->goid, now, status);
	read_iface(e, itab, data);
	bpf_ringbuf_submit(e, wake_flag(&ring_err, ERR_WAKE_BYTES));
}

SEC("uprobe.multi")
int obs_entry(struct pt_regs *ctx)
{
	__u32 tgid = traced_tgid();
	__u64 sp_off;
	if (!tgid)
		return 0;
	__s64 fid = site_func(ctx);
	if (fid < 0)
		return 0;
	__u32 func_id = fid;
	struct gstate *gs = goroutine(ctx, tgid, 1, &sp_off);
	if (!gs) {
		lost_entry(func_id);
		return 0;
	}
	do_entry(gs, GO_G(ctx), func_id, tgid, sp_off, bpf_ktime_get_ns());
	return 0;
}

SEC("uprobe.multi")
int obs_ret(struct pt_regs *ctx)
{
	__u32 tgid = traced_tgid();
	__u64 sp_off;
	if (!tgid)
		return 0;
	__s64 fid = site_func(ctx);
	if (fid < 0)
		return 0;
	struct gstate *gs = goroutine(ctx, tgid, 0, &sp_off);
	if (!gs) {
		COUNT(unmatched_ret);
		return 0;
	}
	do_ret(ctx, gs, GO_G(ctx), fid, tgid, sp_off, bpf_ktime_get_ns());
	return 0;
}

/* A function whose first instruction is its RET (a frameless leaf such as
 * a value-receiver getter): entry and return are one site, and two probes
 * there would run in no defined order. */
SEC("uprobe.multi")
int obs_leaf(struct pt_regs *ctx)
{
	__u32 tgid = traced_tgid();
	__u64 sp_off;
	if (!tgid)
		return 0;
	__s64 fid = site_func(ctx);
	if (fid < 0)
		return 0;
	__u32 func_id = fid;
	struct gstate *gs = goroutine(ctx, tgid, 1, &sp_off);
	if (!gs)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 g = GO_G(ctx);
	do_entry(gs, g, func_id, tgid, sp_off, now);
	do_ret(ctx, gs, g, func_id, tgid, sp_off, now);
	return 0;
}

/* runtime.newproc1(fn, callergp, ...) runs on the system stack, so R14 is
 * g0 here: the creating goroutine comes from the callergp argument. */
SEC("uprobe.multi")
int obs_newproc_entry(struct pt_regs *ctx)
{
	__u32 tgid = traced_tgid();
	if (!tgid)
		return 0;
	__u64 callergp = go_int_reg(ctx, newproc_callergp_reg);
	struct gkey gk = {.tgid = tgid, .g = callergp};
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &gk);
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
	struct gkey gk = {.tgid = tgid, .g = newg};
	__u64 *parent = bpf_map_lookup_elem(&spawning, &tid);
	if (!parent) {
		bpf_map_delete_elem(&goroutines, &gk);
		return 0;
	}
	__u64 p = *parent;
	bpf_map_delete_elem(&spawning, &tid);
	if (!newg)
		return 0;
	struct gstate *gs = gstate_new(&gk);
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
	struct gkey gk = {.tgid = tgid, .g = go_int_reg(ctx, 0)};
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &gk);
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
	/* errtext.h hook: the panic value with a snapshot of what it points
	 * to; the plain record below is the fallback. */
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
	bpf_ringbuf_submit(e, wake_flag(&ring_err, ERR_WAKE_BYTES));
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
	struct gkey gk = {.tgid = tgid, .g = g};
	struct gstate *gs = bpf_map_lookup_elem(&goroutines, &gk);
	if (!gs)
		return 0;
	if (gs->depth > 0)
		unwind(gs, tgid, g, bpf_ktime_get_ns(), 0, NO_FUNC,
		       gs->panic_seq ? OBS_PANIC : OBS_UNFINISHED);
	bpf_map_delete_elem(&goroutines, &gk);
	return 0;
}

/* Empty programs on the same sites: the floor that overhead figures are
 * measured against. */
SEC("uprobe.multi")
int obs_empty(struct pt_regs *ctx)
{
	return 0;
}
