/* What leaves the kernel: per-function aggregates, and the records of the
 * two rings (ok calls; errors, panics, unfinished calls and panic values). */
#ifndef OBS_RECORDS_H
#define OBS_RECORDS_H

#include "helpers.h"

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

/* Sends an ok call; st (may be 0) counts the drop when the ring is full. */
static __always_inline void send_ok(struct frame *f, __u32 tgid, __u64 goid, __u64 now,
				    struct func_stats *st)
{
	struct counters *c = health_get();
	if (!c)
		return;
	struct call_event *e = bpf_ringbuf_reserve(&ring_ok, sizeof(*e), 0);
	if (!e) {
		c->ring_ok_full++;
		if (st)
			st->dropped++;
		return;
	}
	fill_call(e, f, tgid, goid, now, OBS_OK);
	__builtin_memset(e->_pad, 0, sizeof(e->_pad));
	bpf_ringbuf_submit(e, wake_flag(&c->ok_pending, ok_wake_records));
}

/* Reserves an error-lane record with everything but the call zeroed. */
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

/* The submit flag of an error-lane record (an err_event, or errtext.h's
 * larger one). */
static __always_inline __u64 err_wake(void)
{
	struct counters *c = health_get();
	if (!c)
		return BPF_RB_FORCE_WAKEUP;
	return wake_flag(&c->err_pending, err_wake_records);
}

static __always_inline void err_submit(struct err_event *e)
{
	bpf_ringbuf_submit(e, err_wake());
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

#endif
