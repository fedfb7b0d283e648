"""Exit statuses with a meaning (sysexits.h), shared by every MultiStack command."""

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CONFIG = 78
