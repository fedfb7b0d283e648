/* timer.c — hashed timer wheel. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "core/timer.h"

int utcp_wheel_init(struct utcp_wheel *w, struct utcp_timer *slots, uint32_t nslots,
		    uint32_t tick_us, uint64_t now_us)
{
	uint32_t i;

	if (!nslots || (nslots & (nslots - 1)) || !tick_us)
		return -EINVAL;
	w->slots = slots;
	w->mask = nslots - 1;
	w->tick_us = tick_us;
	w->cur_tick = now_us / tick_us;
	w->count = 0;
	w->min_valid = true;
	w->min_tick = UINT64_MAX;
	w->use_bitmap = nslots <= UTCP_WHEEL_BITMAP_SLOTS;
	memset(w->occupied, 0, sizeof(w->occupied));
	for (i = 0; i < nslots; i++)
		slots[i].next = slots[i].prev = &slots[i];
	return 0;
}

/* ---- the occupancy bitmap (kept only when the wheel is small enough) ---- */

static void slot_mark(struct utcp_wheel *w, uint32_t s)
{
	if (w->use_bitmap)
		w->occupied[s >> 6] |= 1ull << (s & 63);
}

/* Clears slot s's bit if the slot holds nothing any more. */
static void slot_check(struct utcp_wheel *w, uint32_t s)
{
	if (w->use_bitmap && w->slots[s].next == &w->slots[s])
		w->occupied[s >> 6] &= ~(1ull << (s & 63));
}

/* The first non-empty slot in [from, to), or to if none. */
static uint32_t next_occupied(const struct utcp_wheel *w, uint32_t from, uint32_t to)
{
	while (from < to) {
		uint64_t word = w->occupied[from >> 6] >> (from & 63);

		if (word) {
			from += (uint32_t)__builtin_ctzll(word);
			return from < to ? from : to;
		}
		from = (from | 63u) + 1;
	}
	return to;
}

static void unlink_timer(struct utcp_timer *t)
{
	t->prev->next = t->next;
	t->next->prev = t->prev;
	t->next = t->prev = NULL;
}

void utcp_wheel_cancel(struct utcp_wheel *w, struct utcp_timer *t)
{
	if (!utcp_timer_armed(t))
		return;
	unlink_timer(t);
	slot_check(w, (uint32_t)(t->tick & w->mask));
	w->count--;
	if (w->min_valid && t->tick == w->min_tick)
		w->min_valid = false;
}

void utcp_wheel_arm(struct utcp_wheel *w, struct utcp_timer *t, uint64_t deadline_us)
{
	uint64_t tick = deadline_us / w->tick_us + (deadline_us % w->tick_us != 0);
	struct utcp_timer *head;

	utcp_wheel_cancel(w, t);
	if (tick < w->cur_tick)
		tick = w->cur_tick;             /* overdue: fires at the next expire() */
	t->tick = tick;
	head = &w->slots[tick & w->mask];
	t->next = head;
	t->prev = head->prev;
	head->prev->next = t;
	head->prev = t;
	slot_mark(w, (uint32_t)(tick & w->mask));
	w->count++;
	if (w->min_valid && tick < w->min_tick)
		w->min_tick = tick;
}

unsigned utcp_wheel_expire(struct utcp_wheel *w, uint64_t now_us, utcp_timer_fn fn, void *ctx)
{
	uint64_t now_tick = now_us / w->tick_us, t, last;
	struct utcp_timer due = {&due, &due, 0}, *e, *n;
	unsigned fired = 0;

	if (now_tick < w->cur_tick)
		return 0;
	/* More than a revolution behind: every slot is visited once. */
	last = now_tick - w->cur_tick > w->mask ? w->cur_tick + w->mask : now_tick;
	for (t = w->cur_tick; t <= last; t++) {
		struct utcp_timer *head = &w->slots[t & w->mask];

		for (e = head->next; e != head; e = n) {
			n = e->next;
			if (e->tick <= now_tick) {
				unlink_timer(e);
				e->next = &due;         /* move to the local due list */
				e->prev = due.prev;
				due.prev->next = e;
				due.prev = e;
			}
		}
		slot_check(w, (uint32_t)(t & w->mask));
	}
	w->cur_tick = now_tick + 1;
	/* Callbacks run after the scan so that re-arming cannot confuse it. */
	while (due.next != &due) {
		e = due.next;
		unlink_timer(e);
		w->count--;
		w->min_valid = false;
		fn(e, ctx);
		fired++;
	}
	return fired;
}

uint64_t utcp_wheel_next_deadline(struct utcp_wheel *w)
{
	uint64_t best = UINT64_MAX, t;

	if (!w->count)
		return UINT64_MAX;
	if (!w->min_valid && w->use_bitmap) {
		/* This round's earliest timer is in the first non-empty slot, counting from the
		 * current one, that holds a timer of this round; if none does, the minimum over
		 * every timer.  Only non-empty slots are visited. */
		uint32_t start = (uint32_t)(w->cur_tick & w->mask), n = w->mask + 1, s;

		for (int half = 0; half < 2 && best == UINT64_MAX; half++) {
			uint32_t from = half ? 0 : start, to = half ? start : n;

			for (s = next_occupied(w, from, to); s < to && best == UINT64_MAX;
			     s = next_occupied(w, s + 1, to)) {
				uint64_t tick = w->cur_tick + ((s - start) & w->mask);
				struct utcp_timer *head = &w->slots[s], *e;

				for (e = head->next; e != head; e = e->next)
					if (e->tick == tick)
						best = tick;
			}
		}
		if (best == UINT64_MAX) {
			for (s = next_occupied(w, 0, n); s < n; s = next_occupied(w, s + 1, n)) {
				struct utcp_timer *head = &w->slots[s], *e;

				for (e = head->next; e != head; e = e->next)
					if (e->tick < best)
						best = e->tick;
			}
		}
		w->min_tick = best;
		w->min_valid = true;
	} else if (!w->min_valid) {
		/* Scan one revolution for this round's earliest timer; if the wheel only
		 * holds later rounds, take the minimum over everything. */
		for (t = w->cur_tick; t <= w->cur_tick + w->mask && best == UINT64_MAX; t++) {
			struct utcp_timer *head = &w->slots[t & w->mask], *e;

			for (e = head->next; e != head; e = e->next)
				if (e->tick == t)
					best = t;
		}
		if (best == UINT64_MAX) {
			for (t = 0; t <= w->mask; t++) {
				struct utcp_timer *head = &w->slots[t], *e;

				for (e = head->next; e != head; e = e->next)
					if (e->tick < best)
						best = e->tick;
			}
		}
		w->min_tick = best;
		w->min_valid = true;
	}
	if (w->min_tick < w->cur_tick)
		return w->cur_tick * w->tick_us;
	return w->min_tick * w->tick_us;
}
