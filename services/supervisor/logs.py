"""`logs [-f]`: every service's log, each line prefixed with its service, like docker compose."""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path


class _Tail:
    def __init__(self, name: str, path: Path, width: int):
        self.prefix = f"{name:<{width}} | "
        self.path = path
        self.fh = None
        self.inode = None
        self.partial = ""

    def _open(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if self.fh is None or st.st_ino != self.inode or st.st_size < self.fh.tell():
            if self.fh:
                self.fh.close()
            self.fh = open(self.path, encoding="utf-8", errors="replace")
            self.inode = st.st_ino
        return True

    def lines(self, tail: int | None = None) -> list[str]:
        if not self._open():
            return []
        data = self.partial + self.fh.read()
        *complete, self.partial = data.split("\n")
        if tail is not None:
            complete = list(deque(complete, maxlen=tail))
        return [self.prefix + line for line in complete]


def show(files: dict[str, Path], follow: bool, tail: int | None, out=sys.stdout) -> None:
    width = max((len(n) for n in files), default=0)
    tails = [_Tail(name, path, width) for name, path in files.items()]
    for t in tails:
        for line in t.lines(tail):
            print(line, file=out)
        if t.partial and not follow:
            print(t.prefix + t.partial, file=out)
    out.flush()
    while follow:
        time.sleep(0.2)
        for t in tails:
            for line in t.lines():
                print(line, file=out)
        out.flush()
