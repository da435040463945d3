"""A small progress bar with ETA for long command-line jobs (stderr, one line)."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    """Call with (done, total); prints ``label [#####.....] 12/90 ETA 4.1 s`` in place."""

    def __init__(self, label: str, *, stream=sys.stderr, width: int = 30) -> None:
        self.label, self.stream, self.width = label, stream, width
        self.start = time.perf_counter()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        elapsed = now - self.start
        eta = elapsed / done * (total - done) if done else float('nan')
        filled = int(self.width * done / max(total, 1))
        bar = '#' * filled + '.' * (self.width - filled)
        end = '\n' if done >= total else ''
        self.stream.write(f'\r{self.label} [{bar}] {done}/{total} '
                          f'{"done in" if done >= total else "ETA"} '
                          f'{elapsed if done >= total else eta:.1f} s{end}')
        self.stream.flush()
