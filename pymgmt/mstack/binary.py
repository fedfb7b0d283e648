"""What mstack-run can tell about a program before it runs it: the shim reaches only programs
the dynamic loader starts (LD_PRELOAD), and only the calls that go through libc. A static
binary, or a Go program (raw system calls), would silently do nothing under the shim — say so
up front instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile


@dataclass(frozen=True)
class BinaryInfo:
    elf: bool
    dynamic: bool  # has a PT_INTERP: ld.so runs it and honours LD_PRELOAD
    go: bool
    uses_io_uring: bool  # imports io_uring_* (liburing): sockets there bypass the shim

    def warnings(self, name: str) -> list[str]:
        out = []
        if self.elf and not self.dynamic:
            out.append(f"{name} is statically linked: LD_PRELOAD cannot reach it, every socket "
                       "stays on the kernel")  # fmt: skip
        if self.go:
            out.append(f"{name} is a Go program: it makes its own system calls, which the shim "
                       "cannot see; every socket stays on the kernel")  # fmt: skip
        if self.uses_io_uring:
            out.append(f"{name} uses io_uring: sockets it drives through io_uring bypass the "
                       "shim and stay on the kernel")  # fmt: skip
        return out


def inspect(path: str | Path) -> BinaryInfo:
    """Facts of an executable; a script or anything not ELF is reported as such (its
    interpreter is what runs, and mstack-run cannot judge it here)."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            dynamic = any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())
            names = {s.name for s in elf.iter_sections()}
            go = ".go.buildinfo" in names or ".note.go.buildid" in names
            uring = False
            dynsym = elf.get_section_by_name(".dynsym")
            if dynsym is not None and hasattr(dynsym, "iter_symbols"):
                uring = any(s.name.startswith("io_uring_") for s in dynsym.iter_symbols())
            return BinaryInfo(True, dynamic, go, uring)
    except (ELFError, OSError):
        return BinaryInfo(False, True, False, False)
