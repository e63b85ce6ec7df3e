"""Progress reporting shared by the library, the CLI (tqdm) and the pages (st.progress).

Long operations take ``progress: ProgressFn | None`` and call it as ``progress(done, total)``
(``total`` may be ``None`` when unknown). The caller decides how to show it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressFn = Callable[[int, "int | None"], None]


StopFn = Callable[[], bool]

# Work done in stages, each counted in its own unit ("drawing images" in images, then
# "importing rows" in rows): ``stage(what, unit)`` starts the next stage and returns the
# ProgressFn that counts it.
StageFn = Callable[[str, str], ProgressFn]


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
    try:
        yield _tqdm_update(bar)
    finally:
        bar.close()


@contextmanager
def tqdm_stages(desc: str) -> Iterator[StageFn]:
    """A ``StageFn`` drawing one tqdm bar per stage ("demo: drawing images"), each closed when
    the next starts or on exit."""
    from tqdm import tqdm

    bars: list = []

    def stage(what: str, unit: str) -> ProgressFn:
        if bars:
            bars[-1].close()
        bars.append(tqdm(desc=f"{desc}: {what}", unit=f" {unit}", dynamic_ncols=True))
        return _tqdm_update(bars[-1])

    try:
        yield stage
    finally:
        if bars:
            bars[-1].close()


def _tqdm_update(bar) -> ProgressFn:
    """A ``ProgressFn`` moving ``bar`` to ``done`` of ``total``."""

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return update
