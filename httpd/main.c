/* main.c — mstack-httpd's command line: load the document root, pick the transport, serve.
 * Two transports: UTCP on a port from mstackd (the default) and kernel sockets (--kernel). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "files.h"
#include "kernel.h"
#include "utcp_transport.h"

/* sysexits.h values, as the rest of the project uses them */
#define EX_USAGE       64
#define EX_NOINPUT     66
#define EX_UNAVAILABLE 69
#define EX_SOFTWARE    70
#define EX_OSERR       71

#define DEFAULT_MAX_CONNS 4096

static void usage(FILE *out)
{
	fprintf(out,
		"usage: mstack-httpd --listen IP:PORT --root DIR [--kernel] [--run-dir DIR]\n"
		"                    [--max-conns N]\n"
		"\n"
		"The paper's minimal HTTP/1.1 server: every regular file under DIR is mapped at\n"
		"start and served to GET and HEAD (keep-alive, pipelining); anything else gets\n"
		"400, 404 or 405 and a clean close.  Prints `listening IP:PORT` and `ready` on\n"
		"stdout once accepting; SIGTERM or SIGINT stop it (exit 0).\n"
		"\n"
		"  --listen IP:PORT  IPv4 address and port (0: any free port)\n"
		"  --root DIR        document root (\"/\" and directories serve index.html)\n"
		"  --kernel          serve on kernel sockets (epoll); without it the server runs\n"
		"                    on UTCP, on a port from mstackd (exit 69 if unreachable)\n"
		"  --run-dir DIR     mstackd's run directory for the UTCP mode (default\n"
		"                    $MSTACK_RUN_DIR or /run/mstack); unused with --kernel\n"
		"  --max-conns N     open connections at most (default %d)\n",
		DEFAULT_MAX_CONNS);
}

static int parse_listen(const char *arg, struct sockaddr_in *sa)
{
	char ip[INET_ADDRSTRLEN];
	const char *colon = strrchr(arg, ':');
	char *end;
	unsigned long port;

	if (!colon || (size_t)(colon - arg) >= sizeof(ip) || colon == arg || !colon[1])
		return -1;
	memcpy(ip, arg, (size_t)(colon - arg));
	ip[colon - arg] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port > 65535 || colon[1] < '0' || colon[1] > '9')
		return -1;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "root", required_argument, NULL, 'r' },
		{ "kernel", no_argument, NULL, 'k' },
		{ "run-dir", required_argument, NULL, 'd' },
		{ "max-conns", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct httpd_kernel_opts kopts = { .max_conns = DEFAULT_MAX_CONNS, .ready = stdout };
	const char *root = NULL, *listen_arg = NULL, *run_dir = getenv("MSTACK_RUN_DIR");
	bool kernel = false;
	struct httpd_files *files;
	struct httpd_server srv;
	char err[PATH_MAX + 128];
	sigset_t stop_signals;
	int opt, rc;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		char *end;
		unsigned long v;

		switch (opt) {
		case 'l':
			listen_arg = optarg;
			if (parse_listen(optarg, &kopts.listen) < 0) {
				fprintf(stderr, "mstack-httpd: --listen wants IPv4:PORT, got '%s'\n",
					optarg);
				return EX_USAGE;
			}
			break;
		case 'r':
			root = optarg;
			break;
		case 'k':
			kernel = true;
			break;
		case 'd':
			run_dir = optarg;
			break;
		case 'm':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || v == 0 || v > 1000000 || optarg[0] == '-') {
				fprintf(stderr, "mstack-httpd: --max-conns wants 1..1000000, got '%s'\n",
					optarg);
				return EX_USAGE;
			}
			kopts.max_conns = (unsigned)v;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "mstack-httpd: unknown or incomplete option '%s'\n",
				argv[optind - 1]);
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mstack-httpd: unexpected argument '%s'\n", argv[optind]);
		return EX_USAGE;
	}
	if (!listen_arg || !root) {
		fprintf(stderr, "mstack-httpd: --listen and --root are required\n");
		usage(stderr);
		return EX_USAGE;
	}

	/* SIGTERM/SIGINT are taken from a signalfd by the transport; blocked from here on, one
	 * that arrives while the root is being mapped still ends in a clean exit 0 */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigprocmask(SIG_BLOCK, &stop_signals, NULL);

	rc = httpd_files_load(root, &files, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "mstack-httpd: cannot load the root: %s\n", err);
		return EX_NOINPUT;
	}
	fprintf(stderr, "mstack-httpd: %zu files (%zu bytes) mapped from %s\n",
		httpd_files_count(files), httpd_files_bytes(files), root);
	httpd_server_init(&srv, files);
	if (kernel) {
		rc = httpd_kernel_serve(&srv, &kopts);
	} else {
		struct httpd_utcp_opts uopts = { .listen = kopts.listen, .max_conns = kopts.max_conns,
						 .run_dir = run_dir, .ready = stdout };
		rc = httpd_utcp_serve(&srv, &uopts);
		if (rc == -ENOTRECOVERABLE) { /* served, but the stack kept a body reference: a bug */
			httpd_files_free(files);
			return EX_SOFTWARE;
		}
		if (rc < 0) {
			httpd_files_free(files);
			return EX_UNAVAILABLE; /* mstackd unreachable or refusing: the message says */
		}
	}
	if (rc == 0)
		fprintf(stderr,
			"mstack-httpd: stopped: %llu connections, %llu requests (2xx %llu, "
			"400 %llu, 404 %llu, 405 %llu), %llu timeouts, %llu I/O errors\n",
			(unsigned long long)srv.stats.conns,
			(unsigned long long)srv.stats.requests,
			(unsigned long long)srv.stats.status_2xx,
			(unsigned long long)srv.stats.status_400,
			(unsigned long long)srv.stats.status_404,
			(unsigned long long)srv.stats.status_405,
			(unsigned long long)srv.stats.timeouts,
			(unsigned long long)srv.stats.io_errors);
	httpd_files_free(files);
	return rc < 0 ? EX_OSERR : 0;
}
