/* libmstack.so: the MultiStack socket shim, loaded with LD_PRELOAD by mstack-run.
 * Today it only announces itself (MSTACK_DEBUG=1); interposing the socket API, the policy
 * decision per socket and UTCP arrive with the shim issue. Every call still goes to libc. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void mstack_shim_init(void)
{
    const char *debug = getenv("MSTACK_DEBUG");

    if (debug && debug[0] == '1')
        fprintf(stderr, "libmstack: loaded in pid %ld; no socket is interposed yet\n",
                (long)getpid());
}
