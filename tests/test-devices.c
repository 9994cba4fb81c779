/*
 * test-devices.c - the port I/O bus and umig's four devices, driven
 * through pio_in()/pio_out() on a real VM's bus with no guest code.
 *
 * What is pinned: the console is line-buffered but never loses a byte;
 * guest time runs only while the devices are resumed and never goes back
 * across save/load; the heartbeat counts, timestamps and measures gaps;
 * the exit port ends the VM; device state records round-trip byte for
 * byte and a damaged stream is refused at the record that is wrong.
 * Timing checks are bounded by host time measured around the action,
 * never by a guess of how long a sleep takes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"
#include "umig/devices.h"
#include "umig/guest-abi.h"
#include "umig/util.h"
#include "umig/vm.h"

#define T_MS 1000000ull

struct t_ctx {
	struct vm *vm;
	int rd, wr;	/* the console pipe: the VM writes wr, tests read rd */
};

static struct vm *t_vm(int console_fd)
{
	struct vm_config cfg = { .mem_size = 4ull << 20, .console_fd = console_fd };
	struct vm *vm = NULL;
	int ret = vm_create(&vm, &cfg);

	if (ret < 0)
		fail_msg("vm_create: %s", err_msg(ret));
	return vm;
}

static int t_setup(void **state)
{
	struct t_ctx *t = calloc(1, sizeof(*t));
	int p[2];

	if (!t || pipe2(p, O_CLOEXEC))
		return -1;
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	t->rd = p[0];
	t->wr = p[1];
	t->vm = t_vm(t->wr);
	*state = t;
	return 0;
}

static int t_teardown(void **state)
{
	struct t_ctx *t = *state;

	vm_destroy(t->vm);
	close(t->rd);
	close(t->wr);
	free(t);
	return 0;
}

/* What the console pipe holds right now, NUL-terminated ("" if nothing). */
static const char *t_console(struct t_ctx *t)
{
	static char buf[2048];
	ssize_t n = read(t->rd, buf, sizeof(buf) - 1);

	buf[n > 0 ? n : 0] = 0;
	return buf;
}

static void t_puts(struct pio_bus *b, const char *s)
{
	while (*s)
		pio_out(b, UMIG_PORT_SERIAL, 1, (uint8_t)*s++);
}

static void t_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000l };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void t_beat(struct pio_bus *b, uint32_t n)
{
	pio_out(b, UMIG_PORT_HEARTBEAT, 4, n);
}

static uint32_t t_dev_id(struct vm *vm, const char *name)
{
	struct device *d = pio_find(&vm->bus, name);

	assert_non_null(d);
	return d->ops->id;
}

static int t_load(struct vm *vm, const void *p, size_t len)
{
	struct rbuf r;

	rbuf_init(&r, p, len);
	err_clear();
	return devices_load(&vm->bus, &r);
}

static void t_assert_msg_has(int code, const char *keyword)
{
	const char *msg = err_msg(code);

	if (!strstr(msg, keyword))
		fail_msg("error detail \"%s\" does not mention \"%s\"", msg, keyword);
}

/* --- the bus ---------------------------------------------------------------- */

static void test_vm_bus_has_abi_ports(void **state)
{
	struct t_ctx *t = *state;
	struct pio_bus *b = &t->vm->bus;

	assert_int_equal(b->n, 5);
	assert_int_equal(pio_find(b, "serial")->ops->port, UMIG_PORT_SERIAL);
	assert_int_equal(pio_find(b, "host")->ops->port, UMIG_PORT_HOST_ID);
	assert_int_equal(pio_find(b, "exit")->ops->port, UMIG_PORT_EXIT);
	assert_int_equal(pio_find(b, "clock")->ops->port, UMIG_PORT_CLOCK_LO);
	assert_int_equal(pio_find(b, "clock")->ops->nports,
			 UMIG_PORT_SLEEP_US + 4 - UMIG_PORT_CLOCK_LO);
	assert_int_equal(pio_find(b, "heartbeat")->ops->port, UMIG_PORT_HEARTBEAT);
	assert_null(pio_find(b, "nonesuch"));
}

/*
 * The host identity: nonzero, never all ones (what a umig without the
 * device answers), the same on every read in one VM, another in the next
 * (two draws collide with probability 2^-32), and no state record.
 */
static void test_host_identity(void **state)
{
	struct t_ctx *t = *state;
	struct vm *other = t_vm(-1);
	uint32_t id = pio_in(&t->vm->bus, UMIG_PORT_HOST_ID, 4);
	struct wbuf w;
	struct rbuf r;
	uint32_t n;

	assert_true(id != 0 && id != 0xffffffffu);
	assert_int_equal(pio_in(&t->vm->bus, UMIG_PORT_HOST_ID, 4), id);
	assert_int_equal(host_id(&t->vm->bus), id);
	assert_int_not_equal(pio_in(&other->bus, UMIG_PORT_HOST_ID, 4), id);
	/* the rest of its ports read as nobody's */
	assert_int_equal(pio_in(&t->vm->bus, UMIG_PORT_HOST_ID + 1, 4), 0xffffffffu);
	/* device state: a record for each of the other four, none for it */
	wbuf_init(&w);
	devices_save(&t->vm->bus, &w);
	rbuf_init(&r, w.data, w.len);
	n = rbuf_get_u32(&r);
	assert_int_equal(n, t->vm->bus.n - 1);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t len;

		assert_int_not_equal(rbuf_get_u32(&r), pio_find(&t->vm->bus, "host")->ops->id);
		len = rbuf_get_u32(&r);
		rbuf_take(&r, len);
		assert_int_equal(r.err, 0);
	}
	assert_int_equal(rbuf_left(&r), 0);
	/* and what it saved loads into another VM */
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(devices_load(&other->bus, &r), 0);
	wbuf_free(&w);
	vm_destroy(other);
}

static void test_unhandled_port(void **state)
{
	struct t_ctx *t = *state;
	struct pio_bus *b = &t->vm->bus;

	assert_true(b->unhandled == 0);
	assert_true(pio_in(b, 0x80, 1) == 0xffffffffu);
	assert_true(b->unhandled == 1);
	pio_out(b, 0x80, 1, 0x12);
	assert_true(b->unhandled == 2);
	/* a port that is owned, but only for output */
	assert_true(pio_in(b, UMIG_PORT_EXIT, 4) == 0xffffffffu);
	assert_true(b->unhandled == 3);
	assert_int_equal(vm_get_status(t->vm), VM_CREATED);
}

struct t_fake {
	uint16_t port;
	unsigned size;
	uint32_t val;
	unsigned outs;
};

static struct t_fake t_fake_seen;

static uint32_t t_fake_in(struct device *d, uint16_t port, unsigned size)
{
	return 0xabc00000u | port << 4 | size;
}

static void t_fake_out(struct device *d, uint16_t port, unsigned size, uint32_t val)
{
	t_fake_seen = (struct t_fake){ port, size, val, t_fake_seen.outs + 1 };
}

#define T_FAKE(nm, i, p, n) { .name = nm, .id = i, .port = p, .nports = n, \
			      .in = t_fake_in, .out = t_fake_out }

static void test_register_rejects_overlap(void **state)
{
	static const struct device_ops a = T_FAKE("a", 1, 0x100, 4);
	static const struct device_ops over_end = T_FAKE("b", 2, 0x103, 2);
	static const struct device_ops over_start = T_FAKE("c", 3, 0xff, 2);
	static const struct device_ops around = T_FAKE("d", 4, 0xf0, 0x20);
	static const struct device_ops below = T_FAKE("e", 5, 0xfc, 4);
	static const struct device_ops above = T_FAKE("f", 6, 0x104, 4);
	static const struct device_ops same_id = T_FAKE("g", 1, 0x200, 1);
	struct pio_bus b = { 0 };

	(void)state;
	assert_int_equal(pio_register(&b, &a, NULL, NULL), 0);
	err_clear();
	assert_int_equal(pio_register(&b, &over_end, NULL, NULL), -EBUSY);
	t_assert_msg_has(-EBUSY, "overlap device a");
	assert_int_equal(pio_register(&b, &over_start, NULL, NULL), -EBUSY);
	assert_int_equal(pio_register(&b, &around, NULL, NULL), -EBUSY);
	/* touching is not overlapping */
	assert_int_equal(pio_register(&b, &below, NULL, NULL), 0);
	assert_int_equal(pio_register(&b, &above, NULL, NULL), 0);
	assert_int_equal(pio_register(&b, &same_id, NULL, NULL), -EBUSY);
	t_assert_msg_has(-EBUSY, "state id clashes with a");
	assert_int_equal(b.n, 3);
}

static void test_register_rejects_real_device_ports(void **state)
{
	static const struct device_ops on_serial = T_FAKE("x", 0x99, UMIG_PORT_SERIAL, 1);
	static const struct device_ops in_clock = T_FAKE("y", 0x98, UMIG_PORT_SLEEP_US + 3, 2);
	static const struct device_ops free_gap = T_FAKE("z", 0x97, UMIG_PORT_SLEEP_US + 4, 4);
	struct t_ctx *t = *state;

	err_clear();
	assert_int_equal(pio_register(&t->vm->bus, &on_serial, t->vm, NULL), -EBUSY);
	t_assert_msg_has(-EBUSY, "serial");
	assert_int_equal(pio_register(&t->vm->bus, &in_clock, t->vm, NULL), -EBUSY);
	t_assert_msg_has(-EBUSY, "clock");
	/* 0x51c..0x51f lies between the clock and the heartbeat */
	assert_int_equal(pio_register(&t->vm->bus, &free_gap, t->vm, NULL), 0);
	assert_int_equal(t->vm->bus.n, 6);
}

static void test_register_rejects_full_bus(void **state)
{
	static struct device_ops ops[PIO_MAX_DEVICES + 1];
	struct pio_bus b = { 0 };

	(void)state;
	for (unsigned i = 0; i <= PIO_MAX_DEVICES; i++)
		ops[i] = (struct device_ops)T_FAKE("fake", 0x100 + i, 0x10 * (i + 1), 1);
	for (unsigned i = 0; i < PIO_MAX_DEVICES; i++)
		assert_int_equal(pio_register(&b, &ops[i], NULL, NULL), 0);
	err_clear();
	assert_int_equal(pio_register(&b, &ops[PIO_MAX_DEVICES], NULL, NULL), -ENOSPC);
	t_assert_msg_has(-ENOSPC, "full");
	assert_int_equal(b.n, PIO_MAX_DEVICES);
}

static void test_dispatch_reaches_the_owner(void **state)
{
	static const struct device_ops a = T_FAKE("a", 1, 0x100, 4);
	static const struct device_ops c = T_FAKE("c", 2, 0x104, 1);
	struct pio_bus b = { 0 };

	(void)state;
	memset(&t_fake_seen, 0, sizeof(t_fake_seen));
	assert_int_equal(pio_register(&b, &a, NULL, NULL), 0);
	assert_int_equal(pio_register(&b, &c, NULL, NULL), 0);
	assert_true(pio_in(&b, 0x103, 2) == (0xabc00000u | 0x103 << 4 | 2));
	pio_out(&b, 0x101, 4, 0xfeedf00d);
	assert_int_equal(t_fake_seen.port, 0x101);
	assert_int_equal(t_fake_seen.size, 4);
	assert_true(t_fake_seen.val == 0xfeedf00d);
	assert_int_equal(t_fake_seen.outs, 1);
	assert_true(pio_find(&b, "c") == &b.devs[1]);
	/* one past the last port of c */
	pio_out(&b, 0x105, 1, 0);
	assert_int_equal(t_fake_seen.outs, 1);
	assert_true(b.unhandled == 1);
}

/* --- serial ----------------------------------------------------------------- */

static void test_serial_line_buffered(void **state)
{
	struct t_ctx *t = *state;

	t_puts(&t->vm->bus, "hi");
	assert_string_equal(t_console(t), "");
	assert_true(serial_bytes(&t->vm->bus) == 2);
	t_puts(&t->vm->bus, "\n");
	assert_string_equal(t_console(t), "hi\n");
	t_puts(&t->vm->bus, "one\ntwo\n");
	assert_string_equal(t_console(t), "one\ntwo\n");
	assert_true(serial_bytes(&t->vm->bus) == 11);
}

static void test_serial_flushed_on_pause(void **state)
{
	struct t_ctx *t = *state;

	t_puts(&t->vm->bus, "partial");
	assert_string_equal(t_console(t), "");
	devices_pause(&t->vm->bus);
	assert_string_equal(t_console(t), "partial");
	devices_pause(&t->vm->bus);	/* nothing twice */
	assert_string_equal(t_console(t), "");
}

static void test_serial_flushed_when_buffer_full(void **state)
{
	struct t_ctx *t = *state;
	const char *out;

	for (int i = 0; i < 511; i++)
		pio_out(&t->vm->bus, UMIG_PORT_SERIAL, 1, 'a' + i % 26);
	assert_string_equal(t_console(t), "");
	pio_out(&t->vm->bus, UMIG_PORT_SERIAL, 1, '!');
	out = t_console(t);
	assert_int_equal(strlen(out), 512);
	assert_int_equal(out[0], 'a');
	assert_int_equal(out[511], '!');
	assert_true(serial_bytes(&t->vm->bus) == 512);
}

static void test_serial_flushed_on_destroy(void **state)
{
	struct t_ctx *t = *state;

	t_puts(&t->vm->bus, "bye");
	vm_destroy(t->vm);
	t->vm = NULL;
	assert_string_equal(t_console(t), "bye");
}

/* console_fd -1 discards output but still counts it. */
static void test_serial_discards_without_console(void **state)
{
	struct vm *vm = t_vm(-1);

	(void)state;
	t_puts(&vm->bus, "lost\n");
	assert_true(serial_bytes(&vm->bus) == 5);
	vm_destroy(vm);
}

/* --- clock ------------------------------------------------------------------ */

static uint64_t t_clock_port(struct pio_bus *b)
{
	uint64_t lo = pio_in(b, UMIG_PORT_CLOCK_LO, 4);

	return lo | (uint64_t)pio_in(b, UMIG_PORT_CLOCK_HI, 4) << 32;
}

static void test_clock_stands_still_until_resumed(void **state)
{
	struct t_ctx *t = *state;

	assert_true(clock_guest_ns(&t->vm->bus) == 0);
	t_sleep_ms(5);
	assert_true(clock_guest_ns(&t->vm->bus) == 0);
	assert_true(t_clock_port(&t->vm->bus) == 0);
}

static void test_clock_runs_while_resumed(void **state)
{
	struct t_ctx *t = *state;
	uint64_t h0, h1, g0, g1;

	h0 = now_ns();
	devices_resume(&t->vm->bus);
	g0 = clock_guest_ns(&t->vm->bus);
	t_sleep_ms(20);
	g1 = clock_guest_ns(&t->vm->bus);
	h1 = now_ns();
	assert_true(g1 - g0 >= 20 * T_MS);
	assert_true(g1 <= h1 - h0);
	/* the port reads the same clock */
	g0 = t_clock_port(&t->vm->bus);
	assert_true(g0 >= g1);
	assert_true(g0 <= now_ns() - h0);
}

static void test_clock_frozen_while_paused(void **state)
{
	struct t_ctx *t = *state;
	uint64_t a, b, c, h0;

	devices_resume(&t->vm->bus);
	t_sleep_ms(10);
	devices_pause(&t->vm->bus);
	a = clock_guest_ns(&t->vm->bus);
	assert_true(a >= 10 * T_MS);
	t_sleep_ms(20);
	b = clock_guest_ns(&t->vm->bus);
	assert_true(a == b);
	assert_true(t_clock_port(&t->vm->bus) == a);
	/* resuming continues from where it stopped, without the paused time */
	h0 = now_ns();
	devices_resume(&t->vm->bus);
	t_sleep_ms(2);
	c = clock_guest_ns(&t->vm->bus);
	assert_true(c >= a + 2 * T_MS);
	assert_true(c - a <= now_ns() - h0);
}

static void test_clock_save_load_continues(void **state)
{
	struct t_ctx *t = *state;
	struct vm *dst = t_vm(-1);
	uint64_t saved, h0, g;
	struct wbuf w;

	devices_resume(&t->vm->bus);
	t_sleep_ms(10);
	devices_pause(&t->vm->bus);
	saved = clock_guest_ns(&t->vm->bus);
	wbuf_init(&w);
	devices_save(&t->vm->bus, &w);

	/* the destination has been running on its own for a while */
	devices_resume(&dst->bus);
	t_sleep_ms(30);
	h0 = now_ns();
	assert_int_equal(t_load(dst, w.data, w.len), 0);
	g = clock_guest_ns(&dst->bus);
	assert_true(g >= saved);
	assert_true(g - saved <= now_ns() - h0);
	t_sleep_ms(5);
	assert_true(clock_guest_ns(&dst->bus) >= saved + 5 * T_MS);

	/* into a stopped clock: exactly the saved value, until resumed */
	vm_destroy(dst);
	dst = t_vm(-1);
	assert_int_equal(t_load(dst, w.data, w.len), 0);
	assert_true(clock_guest_ns(&dst->bus) == saved);
	t_sleep_ms(5);
	assert_true(clock_guest_ns(&dst->bus) == saved);
	devices_resume(&dst->bus);
	t_sleep_ms(2);
	assert_true(clock_guest_ns(&dst->bus) >= saved + 2 * T_MS);
	wbuf_free(&w);
	vm_destroy(dst);
}

/* CLOCK_HI returns the half latched by the last CLOCK_LO, not the current one. */
static void test_clock_hi_matches_latch(void **state)
{
	struct t_ctx *t = *state;
	struct pio_bus *b = &t->vm->bus;
	const uint64_t base = 0x1fffffff0ull;	/* 16 ns before the low half wraps */
	struct wbuf w;
	uint32_t lo, hi;

	wbuf_init(&w);
	wbuf_put_u32(&w, 1);
	wbuf_put_u32(&w, t_dev_id(t->vm, "clock"));
	wbuf_put_u32(&w, 16);
	wbuf_put_u64(&w, base);
	wbuf_put_u64(&w, 0);
	assert_int_equal(t_load(t->vm, w.data, w.len), 0);
	/* stopped: LO latches exactly the loaded value */
	assert_true(t_clock_port(b) == base);

	devices_resume(b);
	t_sleep_ms(1);		/* the running value is now past 0x200000000 */
	assert_int_equal(pio_in(b, UMIG_PORT_CLOCK_HI, 4), 1);	/* still the latch */
	lo = pio_in(b, UMIG_PORT_CLOCK_LO, 4);
	hi = pio_in(b, UMIG_PORT_CLOCK_HI, 4);
	assert_int_equal(hi, 2);
	assert_true(lo >= 1000000u - 16);
	wbuf_free(&w);
}

/* SLEEP_US yields only while the VM should run: never delays a stopped VM. */
static void test_clock_sleep_returns_when_not_running(void **state)
{
	struct t_ctx *t = *state;
	uint64_t h0 = now_ns();

	pio_out(&t->vm->bus, UMIG_PORT_SLEEP_US, 4, 2000000);	/* 2 s */
	assert_true(now_ns() - h0 < 1000 * T_MS);
}

/* --- heartbeat ---------------------------------------------------------------- */

static void test_heartbeat_counts(void **state)
{
	struct t_ctx *t = *state;
	struct hb_stats st;
	uint64_t h0, h1;

	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.beats == 0 && st.last_beat_ns == 0);
	h0 = now_ns();
	for (uint32_t i = 1; i <= 10; i++)
		t_beat(&t->vm->bus, i);
	h1 = now_ns();
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.beats == 10);
	assert_true(st.last_beat_ns >= h0 && st.last_beat_ns <= h1);
	/* the value written is the guest's own count, not what is counted */
	t_beat(&t->vm->bus, 0);
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.beats == 11);
}

static void test_heartbeat_samples_timestamped_in_order(void **state)
{
	struct t_ctx *t = *state;
	struct hb_sample s[16];
	uint64_t h0, h1;
	size_t n;

	h0 = now_ns();
	for (uint32_t i = 1; i <= 5; i++) {
		t_beat(&t->vm->bus, i);
		t_sleep_ms(2);	/* > 1 ms apart: each beat is a sample */
	}
	h1 = now_ns();
	n = heartbeat_samples(&t->vm->bus, 0, s, ARRAY_SIZE(s));
	assert_int_equal(n, 5);
	for (size_t i = 0; i < n; i++) {
		assert_true(s[i].beats == i + 1);
		assert_true(s[i].t_ns >= h0 && s[i].t_ns <= h1);
		if (i)
			assert_true(s[i].t_ns - s[i - 1].t_ns >= 2 * T_MS);
	}
}

static void test_heartbeat_samples_since_and_max(void **state)
{
	struct t_ctx *t = *state;
	struct hb_sample all[8], s[8];

	for (uint32_t i = 1; i <= 5; i++) {
		t_beat(&t->vm->bus, i);
		t_sleep_ms(2);
	}
	assert_int_equal(heartbeat_samples(&t->vm->bus, 0, all, 8), 5);
	/* strictly newer than since */
	assert_int_equal(heartbeat_samples(&t->vm->bus, all[1].t_ns, s, 8), 3);
	assert_memory_equal(s, &all[2], 3 * sizeof(s[0]));
	assert_int_equal(heartbeat_samples(&t->vm->bus, all[4].t_ns, s, 8), 0);
	/* max keeps the newest, oldest first */
	assert_int_equal(heartbeat_samples(&t->vm->bus, 0, s, 2), 2);
	assert_memory_equal(s, &all[3], 2 * sizeof(s[0]));
	assert_int_equal(heartbeat_samples(&t->vm->bus, all[0].t_ns, s, 1), 1);
	assert_memory_equal(s, &all[4], sizeof(s[0]));
	assert_int_equal(heartbeat_samples(&t->vm->bus, 0, s, 0), 0);
}

/* At most one sample per millisecond, however fast the guest beats. */
static void test_heartbeat_samples_rate_limited(void **state)
{
	struct t_ctx *t = *state;
	struct hb_sample *s = calloc(4096, sizeof(*s));
	struct hb_stats st;
	uint64_t h0, h1;
	size_t n;

	assert_non_null(s);
	h0 = now_ns();
	for (uint32_t i = 0; i < 2000; i++)
		t_beat(&t->vm->bus, i);
	h1 = now_ns();
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.beats == 2000);
	n = heartbeat_samples(&t->vm->bus, 0, s, 4096);
	assert_true(n >= 1);
	assert_true(n <= (h1 - h0) / T_MS + 1);
	assert_true(s[n - 1].beats <= 2000);
	free(s);
}

static void test_heartbeat_pause_resume_marks(void **state)
{
	struct t_ctx *t = *state;
	struct hb_sample s[8];
	struct hb_stats st;
	uint64_t h0, h1, h2;

	t_beat(&t->vm->bus, 1);
	h0 = now_ns();
	devices_pause(&t->vm->bus);
	h1 = now_ns();
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.pause_ns >= h0 && st.pause_ns <= h1);
	t_sleep_ms(2);
	devices_resume(&t->vm->bus);
	h2 = now_ns();
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.resume_ns > st.pause_ns && st.resume_ns <= h2);
	assert_true(st.first_after_resume_ns == 0);
	t_beat(&t->vm->bus, 2);
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.first_after_resume_ns >= st.resume_ns);
	assert_true(st.first_after_resume_ns == st.last_beat_ns);
	/* only the first beat after a resume */
	t_sleep_ms(1);
	t_beat(&t->vm->bus, 3);
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.first_after_resume_ns < st.last_beat_ns);
	/* pause and resume are on the timeline: beat, pause, resume, ... */
	assert_true(heartbeat_samples(&t->vm->bus, 0, s, 8) >= 3);
	assert_true(s[1].t_ns == st.pause_ns && s[1].beats == 1);
	assert_true(s[2].t_ns == st.resume_ns && s[2].beats == 1);
}

static void test_heartbeat_window_max_gap(void **state)
{
	struct t_ctx *t = *state;
	struct hb_stats st;
	uint64_t h0, h1, gap;

	heartbeat_window(&t->vm->bus, true);
	h0 = now_ns();
	t_beat(&t->vm->bus, 1);
	t_sleep_ms(30);
	t_beat(&t->vm->bus, 2);
	h1 = now_ns();
	t_sleep_ms(5);
	t_beat(&t->vm->bus, 3);
	heartbeat_stats(&t->vm->bus, &st);
	gap = st.window_max_gap_ns;
	assert_true(gap >= 30 * T_MS);
	assert_true(gap <= h1 - h0);

	/* closed: a longer gap is not measured */
	heartbeat_window(&t->vm->bus, false);
	t_sleep_ms(40);
	t_beat(&t->vm->bus, 4);
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.window_max_gap_ns == gap);
	/* reopened: starts from zero */
	heartbeat_window(&t->vm->bus, true);
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.window_max_gap_ns == 0);
}

/* The guest's value is its progress count: widened across 2^32, and a rate. */
static void test_heartbeat_work_widened_and_rated(void **state)
{
	struct t_ctx *t = *state;
	struct hb_stats st;
	uint64_t h0, h1;
	double rate;

	h0 = now_ns();
	t_beat(&t->vm->bus, 0xfffffff0u);
	t_sleep_ms(20);
	t_beat(&t->vm->bus, 0x10u);	/* wrapped: 0x20 units of progress */
	h1 = now_ns();
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.work == 0x100000010ull);
	rate = heartbeat_work_rate(&t->vm->bus, h0, h1);
	/* 0x20 units over >= 20 ms: at most 1600 units/s, and not zero */
	assert_true(rate > 0 && rate <= 0x20 * 1000.0 / 20);
	/* one sample (or none) in the range: no rate */
	assert_true(heartbeat_work_rate(&t->vm->bus, h1 + 1, h1 + 2) == 0);
	/* the resume remembers where progress stood */
	devices_pause(&t->vm->bus);
	devices_resume(&t->vm->bus);
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.resume_work == 0x100000010ull);
}

/* A gap that spans a pause is downtime, not a stall inside the window. */
static void test_heartbeat_gap_across_pause_not_counted(void **state)
{
	struct t_ctx *t = *state;
	struct hb_stats st;

	heartbeat_window(&t->vm->bus, true);
	t_beat(&t->vm->bus, 1);
	devices_pause(&t->vm->bus);
	t_sleep_ms(30);
	devices_resume(&t->vm->bus);
	t_beat(&t->vm->bus, 2);
	heartbeat_stats(&t->vm->bus, &st);
	assert_true(st.beats == 2);
	assert_true(st.window_max_gap_ns == 0);
}

static void test_heartbeat_count_survives_save_load(void **state)
{
	struct t_ctx *t = *state;
	struct vm *dst = t_vm(-1);
	struct hb_stats st;
	struct wbuf w;

	for (uint32_t i = 1; i <= 7; i++)
		t_beat(&t->vm->bus, i);
	wbuf_init(&w);
	devices_save(&t->vm->bus, &w);
	assert_int_equal(t_load(dst, w.data, w.len), 0);
	heartbeat_stats(&dst->bus, &st);
	assert_true(st.beats == 7);
	t_beat(&dst->bus, 8);
	heartbeat_stats(&dst->bus, &st);
	assert_true(st.beats == 8);
	wbuf_free(&w);
	vm_destroy(dst);
}

/* --- exit ------------------------------------------------------------------- */

static void test_exit_port_ends_vm(void **state)
{
	struct t_ctx *t = *state;

	pio_out(&t->vm->bus, UMIG_PORT_EXIT, 4, 0x1234);
	assert_int_equal(vm_get_status(t->vm), VM_EXITED);
	assert_int_equal(t->vm->exit_code, 0x34);
	/* vm_wait sees it at once */
	assert_int_equal(vm_wait(t->vm, now_ns() + 1000 * T_MS), VM_EXITED);
	pio_out(&t->vm->bus, UMIG_PORT_EXIT, 4, 0x100);
	assert_int_equal(t->vm->exit_code, 0);
}

/* --- device state records ------------------------------------------------------ */

/* A saved stream with known contents in every device, clock stopped. */
static void t_save_busy(struct t_ctx *t, struct wbuf *w)
{
	t_puts(&t->vm->bus, "abc");
	devices_resume(&t->vm->bus);
	t_sleep_ms(3);
	for (uint32_t i = 1; i <= 4; i++)
		t_beat(&t->vm->bus, i);
	devices_pause(&t->vm->bus);
	wbuf_init(w);
	devices_save(&t->vm->bus, w);
	assert_int_equal(w->err, 0);
}

/* Count, then {id, length, payload} per device in registration order. */
static void test_save_layout(void **state)
{
	struct t_ctx *t = *state;
	static const struct { const char *name; uint32_t len; } want[] = {
		{ "serial", 8 }, { "clock", 16 }, { "heartbeat", 12 }, { "exit", 0 },
	};
	struct wbuf w;
	struct rbuf r;

	t_save_busy(t, &w);
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(rbuf_get_u32(&r), ARRAY_SIZE(want));
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		assert_true(rbuf_get_u32(&r) == t_dev_id(t->vm, want[i].name));
		assert_int_equal(rbuf_get_u32(&r), want[i].len);
		if (i == 0)
			assert_true(rbuf_get_u64(&r) == 3);	/* serial bytes */
		else
			rbuf_take(&r, want[i].len);
	}
	assert_int_equal(r.err, 0);
	assert_int_equal(rbuf_left(&r), 0);
	wbuf_free(&w);
}

static void test_save_load_round_trip(void **state)
{
	struct t_ctx *t = *state;
	struct vm *dst = t_vm(-1);
	struct hb_stats st;
	struct wbuf w, w2;

	t_save_busy(t, &w);
	assert_int_equal(t_load(dst, w.data, w.len), 0);
	assert_true(serial_bytes(&dst->bus) == 3);
	assert_true(clock_guest_ns(&dst->bus) == clock_guest_ns(&t->vm->bus));
	heartbeat_stats(&dst->bus, &st);
	assert_true(st.beats == 4);
	/* saving the copy gives the same bytes */
	wbuf_init(&w2);
	devices_save(&dst->bus, &w2);
	assert_int_equal(w2.len, w.len);
	assert_memory_equal(w2.data, w.data, w.len);
	wbuf_free(&w);
	wbuf_free(&w2);
	vm_destroy(dst);
}

static void test_load_rejects_every_truncation(void **state)
{
	struct t_ctx *t = *state;
	struct vm *dst = t_vm(-1);
	struct wbuf w;

	t_save_busy(t, &w);
	for (size_t len = 0; len < w.len; len++) {
		uint8_t *copy = malloc(len ? len : 1);	/* exact size, for ASan */

		assert_non_null(copy);
		memcpy(copy, w.data, len);
		assert_int_equal(t_load(dst, copy, len), -EBADMSG);
		t_assert_msg_has(-EBADMSG, "truncated");
		free(copy);
	}
	wbuf_free(&w);
	vm_destroy(dst);
}

static void test_load_rejects_unknown_device(void **state)
{
	struct t_ctx *t = *state;
	struct wbuf w;

	wbuf_init(&w);
	wbuf_put_u32(&w, 1);
	wbuf_put_u32(&w, 0xdeadbeef);
	wbuf_put_u32(&w, 0);
	assert_int_equal(t_load(t->vm, w.data, w.len), -EPROTONOSUPPORT);
	t_assert_msg_has(-EPROTONOSUPPORT, "unknown device id 0xdeadbeef");
	wbuf_free(&w);
}

/* A record whose length is not what its device reads. */
static void t_load_record(struct t_ctx *t, const char *dev, uint32_t len, int code)
{
	struct wbuf w;

	wbuf_init(&w);
	wbuf_put_u32(&w, 1);
	wbuf_put_u32(&w, t_dev_id(t->vm, dev));
	wbuf_put_u32(&w, len);
	for (uint32_t i = 0; i < len; i++)
		wbuf_put_u8(&w, 0);
	assert_int_equal(t_load(t->vm, w.data, w.len), code);
	if (code)
		t_assert_msg_has(code, dev);
	wbuf_free(&w);
}

static void test_load_rejects_record_length_mismatch(void **state)
{
	struct t_ctx *t = *state;

	t_load_record(t, "clock", 16, 0);
	t_load_record(t, "clock", 24, -EBADMSG);	/* longer than it reads */
	t_assert_msg_has(-EBADMSG, "malformed");
	t_load_record(t, "clock", 8, -EBADMSG);	/* shorter */
	t_load_record(t, "serial", 4, -EBADMSG);
	t_load_record(t, "serial", 9, -EBADMSG);
	t_load_record(t, "heartbeat", 8, -EBADMSG);
	t_load_record(t, "exit", 0, 0);
	t_load_record(t, "exit", 1, -EBADMSG);	/* stateless: must be empty */
}

static void test_load_rejects_absurd_count(void **state)
{
	struct t_ctx *t = *state;
	static const uint32_t counts[] = { 65, 1000000, 0xffffffffu };
	struct wbuf w;

	wbuf_init(&w);
	for (size_t i = 0; i < ARRAY_SIZE(counts); i++) {
		wbuf_reset(&w);
		wbuf_put_u32(&w, counts[i]);
		assert_int_equal(t_load(t->vm, w.data, w.len), -EBADMSG);
		t_assert_msg_has(-EBADMSG, "claims");
	}
	/* zero devices is a valid, empty stream */
	wbuf_reset(&w);
	wbuf_put_u32(&w, 0);
	assert_int_equal(t_load(t->vm, w.data, w.len), 0);
	wbuf_free(&w);
}

#define T_CASE(f) cmocka_unit_test_setup_teardown(f, t_setup, t_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T_CASE(test_vm_bus_has_abi_ports),
		T_CASE(test_unhandled_port),
		T_CASE(test_host_identity),
		cmocka_unit_test(test_register_rejects_overlap),
		T_CASE(test_register_rejects_real_device_ports),
		cmocka_unit_test(test_register_rejects_full_bus),
		cmocka_unit_test(test_dispatch_reaches_the_owner),
		T_CASE(test_serial_line_buffered),
		T_CASE(test_serial_flushed_on_pause),
		T_CASE(test_serial_flushed_when_buffer_full),
		T_CASE(test_serial_flushed_on_destroy),
		cmocka_unit_test(test_serial_discards_without_console),
		T_CASE(test_clock_stands_still_until_resumed),
		T_CASE(test_clock_runs_while_resumed),
		T_CASE(test_clock_frozen_while_paused),
		T_CASE(test_clock_save_load_continues),
		T_CASE(test_clock_hi_matches_latch),
		T_CASE(test_clock_sleep_returns_when_not_running),
		T_CASE(test_heartbeat_counts),
		T_CASE(test_heartbeat_samples_timestamped_in_order),
		T_CASE(test_heartbeat_samples_since_and_max),
		T_CASE(test_heartbeat_samples_rate_limited),
		T_CASE(test_heartbeat_pause_resume_marks),
		T_CASE(test_heartbeat_window_max_gap),
		T_CASE(test_heartbeat_work_widened_and_rated),
		T_CASE(test_heartbeat_gap_across_pause_not_counted),
		T_CASE(test_heartbeat_count_survives_save_load),
		T_CASE(test_exit_port_ends_vm),
		T_CASE(test_save_layout),
		T_CASE(test_save_load_round_trip),
		T_CASE(test_load_rejects_every_truncation),
		T_CASE(test_load_rejects_unknown_device),
		T_CASE(test_load_rejects_record_length_mismatch),
		T_CASE(test_load_rejects_absurd_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
