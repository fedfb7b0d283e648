/* What every C compat scenario uses: observations as JSON lines on stdout, expectations, the
 * scripted peer's control channel, and the hold marker at which the harness checks that UTCP
 * (not the kernel) carries the connection. The harness compares the observation lines of the
 * native run and the run under mstack-run; `@`-lines are for the harness only. */
#ifndef COMPAT_H
#define COMPAT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Environment handed over by the harness. */
struct compat_env {
	const char *host_ip;   /* this host's test bed address (scenarios listen here) */
	const char *remote_ip; /* the remote host (the peer listens there) */
	const char *peer_path; /* the peer's control socket */
	int port;              /* the scenario's port (and port + 1 .. port + 3) */
	int under_shim;        /* COMPAT_UNDER_SHIM=1: run by mstack-run */
};
extern struct compat_env env;
extern int compat_failures;

/* One observation line: ob_begin, any number of fields, ob_end. */
void ob_begin(const char *call);
void ob_int(const char *key, long v);
void ob_str(const char *key, const char *v);
void ob_raw(const char *key, const char *json);
void ob_end(void);
const char *errname(int e);

/* Record a call's return value (and errno when it failed); returns ret. */
long rec(const char *call, long ret);
/* The same for calls that return a descriptor: the number itself is not compared. */
int recfd(const char *call, int ret);
/* A transfer: return value and the digest of the bytes. */
long recdata(const char *call, long ret, const void *buf);
/* An expectation of the scenario about what it is for; a failed one fails the run. */
void expect(int ok, const char *what);

/* The byte pattern and digest the peer uses too. */
void pattern(uint8_t *buf, size_t off, size_t n);
uint64_t fnv(const void *buf, size_t n, uint64_t h);
#define FNV_INIT 0xcbf29ce484222325ull
uint64_t pattern_sum(size_t off, size_t n);
void hexsum(uint64_t h, char out[17]);

/* The peer: one control connection per process. */
void peer_open(void);
const char *peer_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void peer_go(void);
/* Ask for the reports, record them as an observation; returns the raw JSON list. */
const char *peer_result(void);
/* A field of the n-th report ("read", "end", "sum"): a small parser for our own output. */
long peer_field_int(const char *json, int n, const char *key);
int peer_field_is(const char *json, int n, const char *key, const char *value);
int peer_ctl_fd(void);
/* After exec: the control connection inherited from the program before. */
void peer_adopt(int fd);

/* Hold: tell the harness a connection is open (conn=1) or a socket exists (conn=0), and wait
 * until it has checked. */
void hold(int fd, int conn);

/* Sockets toward the peer. */
int sa_remote(struct sockaddr_storage *ss, int port_off);
int sa_host(struct sockaddr_storage *ss, int port_off, int wildcard);
int tcp_socket(int flags);
int tcp_connect(int port_off);
int tcp_listen(int port_off, int reuseaddr);
/* poll for `events` up to timeout_ms; returns revents (0 on timeout). */
int wait_ev(int fd, short events, int timeout_ms);
long send_pat(int fd, size_t n, int flags);
long recv_all(int fd, size_t n, uint64_t *sum);
void echo_check(int fd, size_t n);
char *mask_str(int revents, char *buf, size_t len);
char *epmask_str(uint32_t ev, char *buf, size_t len);
double now_s(void);

/* Scenario table: name, function, kind. */
struct scenario {
	const char *name;
	void (*fn)(void);
	const char *kind; /* "client", "server" or "both" */
	const char *about; /* what it exercises, for the README */
	int differential; /* 0: shim-only (the native run legitimately differs) */
};
extern const struct scenario scenarios[];
extern const size_t n_scenarios;

#endif
