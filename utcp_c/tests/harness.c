/* harness.c — shared helpers for the TCP tests (filled in with the stack). */
#include "testlib.h"
int harness_placeholder_(void);
int harness_placeholder_(void) { return 0; }
