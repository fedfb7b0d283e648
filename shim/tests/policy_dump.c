/* policy_dump: parse a policy text (argv[1]) with the shim's parser and print its canonical
 * form, or "error: ..." and exit 1; with more arguments "listen A.B.C.D PORT" or "connect ..."
 * print 1 or 0. Lets tests check the Python writer and the C reader agree. */
#include "../policy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	static struct mstack_policy p;
	char err[256], out[8192];

	if (argc < 2) {
		fprintf(stderr, "usage: policy_dump TEXT [listen|connect ADDR PORT]...\n");
		return 2;
	}
	if (mstack_policy_parse(argv[1], &p, err, sizeof(err))) {
		printf("error: %s\n", err);
		return 1;
	}
	if (argc == 2) {
		size_t n = mstack_policy_format(&p, out, sizeof(out));
		if (n >= sizeof(out))
			return 3;
		printf("%s\n", out);
		return 0;
	}
	if ((argc - 2) % 3)
		return 2;
	for (int i = 2; i + 2 < argc; i += 3) {
		struct in_addr a;
		if (inet_pton(AF_INET, argv[i + 1], &a) != 1)
			return 2;
		uint16_t port = (uint16_t)atoi(argv[i + 2]);
		int r = !strcmp(argv[i], "listen") ? mstack_policy_listen(&p, ntohl(a.s_addr), port)
						    : mstack_policy_connect(&p, ntohl(a.s_addr), port);
		printf("%d\n", r);
	}
	return 0;
}
