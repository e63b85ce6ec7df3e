"""Progress reporting shared by the library, the CLI (tqdm) and the pages (st.progress).

Long operations take ``progress: ProgressFn | None`` and call it as ``progress(done, total)``
(``total`` may be ``None`` when unknown). The caller decides how to show it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressFn = Callable[[int, "int | None"], None]


StopFn = Callable[[], bool]


class Cancelled(Exception):
    """Raised by long work when its caller asked it to stop (what was saved stays saved)."""


def check_stop(should_stop: StopFn | None) -> None:
    """Raise :class:`Cancelled` if ``should_stop`` says so; call between items of long work."""
    if should_stop is not None and should_stop():
        raise Cancelled("stopped on request")


def report(progress: ProgressFn | None, done: int, total: int | None) -> None:
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(done, total)


@contextmanager
def tqdm_progress(desc: str, unit: str = "it") -> Iterator[ProgressFn]:
    """A ``ProgressFn`` drawing a tqdm bar (rate and ETA) on stderr, closed on exit."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, dynamic_ncols=True)

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
