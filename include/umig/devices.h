/*
 * devices.h - port I/O devices and the bus that dispatches to them.
 *
 * Each device registers a designated-initializer ops struct naming its
 * ports and its save/load functions.  Device state travels as a list of
 * records {u32 id, u32 length, payload}; each device reads exactly its own
 * payload, so a newer umig can add devices without breaking older streams
 * and a garbled record is caught at its own boundary.
 *
 * All handlers run on the vCPU thread.  save/load/pause/resume run only
 * while the vCPU is stopped (vm.c guarantees it).
 */
#ifndef UMIG_DEVICES_H
#define UMIG_DEVICES_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "umig/buf.h"

struct vm;
struct device;

struct device_ops {
	const char *name;
	uint32_t id;                 /* tag of its state record */
	uint16_t port, nports;       /* ports [port, port + nports) */
	uint32_t (*in)(struct device *d, uint16_t port, unsigned size);
	void (*out)(struct device *d, uint16_t port, unsigned size, uint32_t val);
	void (*save)(struct device *d, struct wbuf *w);
	int (*load)(struct device *d, struct rbuf *r);
	void (*pause)(struct device *d);   /* optional: the guest stops running */
	void (*resume)(struct device *d);  /* optional: the guest runs again */
	void (*destroy)(struct device *d); /* optional: frees priv */
	bool no_state;               /* writes no state record (stateless, and new) */
};

struct device {
	const struct device_ops *ops;
	struct vm *vm;
	void *priv;
};

#define PIO_MAX_DEVICES 8

struct pio_bus {
	struct device devs[PIO_MAX_DEVICES];
	unsigned n;
	uint64_t unhandled;   /* accesses to ports nobody owns */
};

/* -EBUSY if the ports overlap a registered device, -ENOSPC if full. */
int pio_register(struct pio_bus *b, const struct device_ops *ops, struct vm *vm,
		 void *priv);
uint32_t pio_in(struct pio_bus *b, uint16_t port, unsigned size);
void pio_out(struct pio_bus *b, uint16_t port, unsigned size, uint32_t val);
struct device *pio_find(struct pio_bus *b, const char *name);

void devices_save(struct pio_bus *b, struct wbuf *w);
int devices_load(struct pio_bus *b, struct rbuf *r);
void devices_pause(struct pio_bus *b);
void devices_resume(struct pio_bus *b);
void devices_destroy(struct pio_bus *b);

/* --- serial console (port 0x3f8) --- */
int serial_register(struct pio_bus *b, struct vm *vm, int out_fd);
uint64_t serial_bytes(struct pio_bus *b);

/* --- guest-monotonic clock and sleep (ports 0x510..0x51b) --- */
int clock_register(struct pio_bus *b, struct vm *vm);
/* Nanoseconds the guest has been running: frozen while paused. */
uint64_t clock_guest_ns(struct pio_bus *b);

/* --- heartbeat / progress counter (port 0x520) --- */
struct hb_sample {
	uint64_t t_ns;    /* host CLOCK_MONOTONIC */
	uint64_t beats;   /* cumulative heartbeats at t_ns */
	uint64_t work;    /* the guest's progress count at t_ns (its beat values, widened) */
};

struct hb_stats {
	uint64_t beats;
	uint64_t last_beat_ns;       /* latest beat (0: none since the latest resume) */
	uint64_t pause_ns;           /* host time of the latest pause */
	uint64_t resume_ns;          /* host time of the latest resume */
	uint64_t first_after_resume_ns; /* first beat after that resume (0: none yet) */
	uint64_t window_max_gap_ns;  /* longest gap between beats inside the window */
	uint64_t work;               /* the guest's progress count: its beat values, widened to 64 bits */
	uint64_t resume_work;        /* work at the latest resume */
};

int heartbeat_register(struct pio_bus *b, struct vm *vm);
void heartbeat_stats(struct pio_bus *b, struct hb_stats *out);
/* Copy up to max samples newer than since_ns, oldest first; returns count. */
size_t heartbeat_samples(struct pio_bus *b, uint64_t since_ns,
			 struct hb_sample *out, size_t max);
/*
 * Start/stop measuring the longest gap between beats (e.g. during post-copy).
 * The window stays open across a pause and a resume, but a gap that spans
 * them is not counted (it is the switchover's, measured in parts).
 */
void heartbeat_window(struct pio_bus *b, bool on);
/*
 * The guest's progress rate (work units per second of host time) over the
 * samples in [from_ns, to_ns]; 0 with fewer than two samples there.
 */
double heartbeat_work_rate(struct pio_bus *b, uint64_t from_ns, uint64_t to_ns);

/* --- exit device (port 0x501) --- */
int exit_register(struct pio_bus *b, struct vm *vm);

/* --- host identity (port 0x524): changes when the guest moves --- */
int host_register(struct pio_bus *b, struct vm *vm);
uint32_t host_id(struct pio_bus *b);

#endif
