/* timer.h — a hashed timer wheel (Varghese & Lauck scheme 6).  Deadlines are in
 * microseconds, rounded up to the wheel's tick; timers far in the future sit in their
 * slot until their round comes.  The caller owns the time: expire(now) fires what is
 * due, next_deadline() says when to call again. */
#ifndef UTCP_TIMER_H
#define UTCP_TIMER_H

#include <stdbool.h>
#include <stdint.h>

struct utcp_timer {
	struct utcp_timer *next, *prev;   /* NULL when not armed */
	uint64_t tick;                    /* absolute tick at which it fires */
};

/* Wheels of up to this many slots keep a bitmap of their non-empty slots, so that finding
 * the next deadline visits only slots that hold timers (the stack's TIME-WAIT timer and the
 * server's idle wakeups sit seconds ahead, beyond a revolution: without it every lookup
 * walked every slot twice). */
#define UTCP_WHEEL_BITMAP_SLOTS 4096u

struct utcp_wheel {
	struct utcp_timer *slots;         /* nslots sentinel heads (caller's memory) */
	uint32_t mask;                    /* nslots - 1, nslots a power of two */
	uint32_t tick_us;
	uint64_t cur_tick;                /* ticks < cur_tick have been processed */
	uint32_t count;
	bool min_valid;
	bool use_bitmap;                  /* nslots <= UTCP_WHEEL_BITMAP_SLOTS */
	uint64_t min_tick;
	uint64_t occupied[UTCP_WHEEL_BITMAP_SLOTS / 64];   /* bit per non-empty slot */
};

typedef void (*utcp_timer_fn)(struct utcp_timer *t, void *ctx);

/* nslots must be a power of two; slots points at nslots struct utcp_timer. */
int utcp_wheel_init(struct utcp_wheel *w, struct utcp_timer *slots, uint32_t nslots,
		    uint32_t tick_us, uint64_t now_us);
static inline bool utcp_timer_armed(const struct utcp_timer *t) { return t->next != 0; }
/* Arms (or re-arms) t to fire at the first tick boundary >= deadline_us. */
void utcp_wheel_arm(struct utcp_wheel *w, struct utcp_timer *t, uint64_t deadline_us);
void utcp_wheel_cancel(struct utcp_wheel *w, struct utcp_timer *t);
/* Fires every timer due at now_us; callbacks may re-arm.  Returns how many fired. */
unsigned utcp_wheel_expire(struct utcp_wheel *w, uint64_t now_us, utcp_timer_fn fn, void *ctx);
/* The time (µs) at which expire() will next have something to do; UINT64_MAX if idle. */
uint64_t utcp_wheel_next_deadline(struct utcp_wheel *w);

#endif
