/*
 * t-util.h - helpers shared by umig's cmocka tests (prefix t_).
 *
 * Integration tests run the real build/umig binary as a child process
 * with a hard time limit, capture its stdout and stderr into files in a
 * per-test temporary directory, and clean both up whatever happens.
 */
#ifndef UMIG_T_UTIL_H
#define UMIG_T_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>
#include <jansson.h>

/*
 * memverify's clean end, whatever number of passes it ran: migration tests
 * run it for guest seconds (secs=), not passes, so that it outlives
 * --migrate-after on any vCPU speed and still ends in a bounded time.
 */
#define T_MV_DONE " mismatches=0\n"

/* Skip the current test, printing why, unless cond holds. */
#define t_skip_unless(cond, ...)				\
	do {							\
		if (!(cond)) {					\
			print_message("skip: " __VA_ARGS__);	\
			skip();					\
		}						\
	} while (0)

struct t_result {
	int status;      /* exit status; 128+sig if killed; -1 on timeout */
	char *out;       /* captured stdout (NUL-terminated, caller frees) */
	char *err;       /* captured stderr */
};

/* Path of the umig binary ($UMIG_BIN, default build/umig). */
const char *t_umig(void);
/* Path of a guest ELF ($UMIG_GUESTS/NAME.elf, default build/guest-tests). */
const char *t_guest(const char *name);

/* A fresh private directory; removed by t_tmpdir_free(). */
char *t_tmpdir(void);
void t_tmpdir_free(char *dir);
/* dir + "/" + name in a static rotating buffer (valid for 8 calls). */
const char *t_path(const char *dir, const char *name);

/* Run argv (NULL-terminated) to completion within timeout_s. */
void t_run(char *const argv[], int timeout_s, struct t_result *r);
void t_result_free(struct t_result *r);

/* Start argv in the background with stdout/stderr to files (NULL: /dev/null). */
pid_t t_spawn(char *const argv[], const char *out_path, const char *err_path);
/* Wait up to timeout_s; on timeout kill it and return -1.  Else its status. */
int t_wait(pid_t pid, int timeout_s);
/* Kill (SIGKILL) and reap, for cleanup paths. */
void t_kill(pid_t pid);

char *t_read_file(const char *path);     /* NULL if absent; caller frees */
bool t_wait_for_path(const char *path, int timeout_ms);
/* Wait until file at path contains needle, up to timeout_ms. */
bool t_wait_for_text(const char *path, const char *needle, int timeout_ms);
/* Count occurrences of needle in hay. */
int t_count(const char *hay, const char *needle);

/* A statistics record's field, or the test fails naming it (never NULL). */
json_t *t_json_need(json_t *rec, const char *key);
/*
 * memverify on RAM of this backing (--ram-backing) snapshotted mid-way,
 * then restored into the same backing: it goes on to the end clean.
 */
void t_snapshot_round_trip(const char *backing);

#endif
