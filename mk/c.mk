# Compiler settings shared by every C part of the project (include it from a sub-Makefile).
# C11, warnings as errors; SAN=1 selects the ASan/UBSan build the tests also run.

CC  ?= cc
SAN ?= 0

C_WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
          -Wpointer-arith -Wvla -Wformat=2 -Wundef
ifeq ($(SAN),1)
CFLAGS  := -std=c11 -O1 -g $(C_WARN) -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=all
LDFLAGS := -fsanitize=address,undefined
else
CFLAGS  := -std=c11 -O2 -g $(C_WARN)
LDFLAGS :=
endif
