"""One place that checks what users type: names, output paths, server paths and JSON files.

Every check raises :class:`InputRefused` (a ``ValueError``) whose one-line message names the
value, the rule it breaks and the fix; the CLI turns it into a usage error (exit 2) and the
pages into ``st.error``. Nothing is written before a check passes.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import unicodedata
from collections.abc import Callable, Iterable
from itertools import accumulate, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

MAX_NAME_LENGTH = 200
# Pseudo-file systems: writing there changes the running system or fails in odd ways.
SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
# JSON read from users (label files, recipes, schemes, requests): generous for real files,
# small enough that a file built to exhaust memory or time is refused at once.
JSON_MAX_BYTES = 64 * 2**20
JSON_MAX_DEPTH = 64
JSON_MAX_STRING = 1 * 2**20
# Longest file name (one path part) and path most file systems take, in bytes.
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096


class InputRefused(ValueError):
    """A name, path or file refused before anything was written; the message says why and how to fix it."""


def refusal(check: Callable[..., Any], *args: Any, **kwargs: Any) -> str | None:
    """The message of ``check(*args, **kwargs)``'s refusal, or None when it passes (for pages,
    which show it with ``st.error``)."""
    try:
        check(*args, **kwargs)
    except InputRefused as exc:
        return str(exc)
    return None


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters with the full length noted (so a
    100k-character name gives a readable message)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}...{length}"


# -- names --------------------------------------------------------------------------------------
def check_name(value: Any, what: str = "dataset name") -> str:
    """``value`` if it is a usable name (of a dataset, recipe, scheme, run ...): not empty, no
    spaces around it, no ``/``, ``\\``, ``..`` or control characters, at most 200 characters."""
    rule = (f"a {what} is 1-{MAX_NAME_LENGTH} characters without / \\ .. or control characters, "
            "and no spaces at either end")
    if not isinstance(value, str):
        raise InputRefused(f"{what} {shown(value)} is not text: {rule}")
    problem = _name_problem(value)
    if problem:
        raise InputRefused(f"{what} {shown(value)} {problem}: {rule}")
    return value


def _name_problem(value: str) -> str | None:
    if not value.strip():
        return "is empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long"
    if value != value.strip():
        return "has spaces at an end"
    for char in ("/", "\\", ".."):
        if char in value:
            return f"contains {char!r}"
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if bad is not None:
        return f"contains the control character {bad!r}"
    return None


# -- file names inside a folder -----------------------------------------------------------------
def file_name_problem(name: str) -> str | None:
    """Why ``name`` (a relative file name read from a dataset or a folder listing) cannot be
    stored or opened: not valid UTF-8, or longer than file systems allow; None if fine."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (rename the file)"
    if len(encoded) > PATH_MAX_BYTES:
        return f"path is {len(encoded)} bytes long, over the {PATH_MAX_BYTES} file systems allow"
    longest = max((len(part.encode("utf-8")) for part in name.replace("\\", "/").split("/")), default=0)
    if longest > NAME_MAX_BYTES:
        return f"a file or folder name is {longest} bytes long, over the {NAME_MAX_BYTES} file systems allow"
    return None


def printable(name: str) -> str:
    """``name`` safe to print and store: bytes that are not UTF-8 (kept by the OS as
    surrogates) shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if _has_surrogates(name) else name


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it once both are resolved (symlinks followed)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


# -- output paths -------------------------------------------------------------------------------
def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as a :class:`Path` if a file can be written there: not a folder, not under a
    file, not in ``/proc``, ``/sys`` or ``/dev``, in a folder this process may write."""
    path = _output_path(path, what)
    if path.is_dir():
        raise InputRefused(f"{what} {path} is a folder: give a file name, e.g. {path / 'out.json'}")
    _check_writable_parent(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder", *, must_be_new: bool = False) -> Path:
    """``path`` as a :class:`Path` if it is or can become a writable folder (``must_be_new``:
    it must not exist yet)."""
    path = _output_path(path, what)
    if path.exists():
        if not path.is_dir():
            raise InputRefused(f"{what} {path} is a file, not a folder: choose a folder path")
        if must_be_new:
            raise InputRefused(f"{what} {path} already exists: choose a new folder")
        if not os.access(path, os.W_OK):
            raise InputRefused(f"{what} {path} cannot be written (permission denied): choose a folder you can write")
        return path
    _check_writable_parent(path, what)
    return path


def _typed_path(path: str | os.PathLike, what: str, where: str = "") -> str:
    """The text of a typed path, refused when empty or holding a NUL character."""
    text = str(os.fspath(path))
    if not text.strip():
        raise InputRefused(f"{what} is empty: give a path{where}")
    if "\x00" in text:
        raise InputRefused(f"{what} {shown(text)} contains a NUL character: give a plain path")
    return text


def _output_path(path: str | os.PathLike, what: str) -> Path:
    path = Path(_typed_path(path, what)).expanduser()
    problem = file_name_problem(str(path))
    if problem:
        raise InputRefused(f"{what} {shown(str(path))}: {problem}")
    resolved = path.resolve()
    for root in SYSTEM_ROOTS:
        if resolved.is_relative_to(root):
            raise InputRefused(f"{what} {path} is in {root}, a system folder: choose a folder of your own")
    return path


def _check_writable_parent(path: Path, what: str) -> None:
    """The nearest existing folder above ``path`` is a folder this process can write in."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputRefused(f"{what} {path} is under {parent}, which is a file, not a folder: "
                                   "choose a path in a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputRefused(f"{what} {path} cannot be written: {parent} is not writable "
                                   "(permission denied); choose a folder you can write")
            return


# -- server paths typed into pages --------------------------------------------------------------
def allowed_roots(settings: Any) -> list[Path]:
    """The folders pages may read and write server paths in: the data folder, then the
    admin's ``allowed_roots`` (setting ``WORKBENCH_ALLOWED_ROOTS``)."""
    return [Path(settings.data_dir), *(Path(p) for p in settings.allowed_roots)]


def check_inside_roots(path: str | os.PathLike, roots: Iterable[Path], what: str = "path") -> Path:
    """``path`` if it lies inside one of ``roots`` (symlinks resolved); else refused, naming the roots."""
    roots = list(roots)
    text = _typed_path(path, what, f" inside {_roots_text(roots)}")
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = Path.cwd() / candidate
    try:
        inside = any(is_inside(candidate, root) for root in roots)
    except (OSError, RuntimeError) as exc:  # a symlink loop, a path the OS refuses
        raise InputRefused(f"{what} {shown(str(text))} cannot be resolved ({exc}): give another path") from None
    if inside:
        return candidate
    raise InputRefused(f"{what} {shown(str(text))} is outside the allowed folders ({_roots_text(roots)}): "
                       "choose a path inside one, or have an admin add its folder to allowed_roots "
                       "(WORKBENCH_ALLOWED_ROOTS)")


def _roots_text(roots: list[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def check_server_path(path: str | os.PathLike, settings: Any, what: str, *, kind: str = "dir",
                      must_be_new: bool = False) -> Path:
    """A path typed into a page: inside the allowed roots, and (``kind`` ``dir``/``file``) writable
    there as an output, or (``kind`` ``input``) only inside the roots."""
    inside = check_inside_roots(path, allowed_roots(settings), what)
    if kind == "file":
        return check_output_file(inside, what)
    if kind == "dir":
        return check_output_dir(inside, what, must_be_new=must_be_new)
    return inside


def looks_like_path(value: str) -> bool:
    """Whether a model reference typed by a user names a local path (not a hub id or registry name)."""
    text = value.strip()
    return text.startswith(("/", "~", ".", "\\")) or (len(text) > 1 and text[1] == ":") or Path(text).expanduser().exists()


def check_server_model(value: str, settings: Any, what: str) -> str:
    """A model typed into a page: a hub id or registry name as it is, a local path only inside
    the allowed roots."""
    if value.strip() and looks_like_path(value):
        check_inside_roots(value.strip(), allowed_roots(settings), what)
    return value


# -- keys of settings files ---------------------------------------------------------------------
def did_you_mean(key: Any, known: Iterable[str]) -> str:
    """`` (did you mean trigger_word?)`` for the known key closest to ``key``, or ``""``."""
    known = sorted(known)
    text = str(key)
    close = difflib.get_close_matches(text, known, n=1, cutoff=0.5)
    close = close or [k for k in known if text and (k.startswith(text) or text.startswith(k))][:1]
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_key_problem(key: Any, known: Iterable[str], hint: str = "") -> str:
    """``"'trigger' is not a known key (did you mean trigger_word?); known keys: ..."``."""
    known = sorted(known)
    return f"{shown(key, 40)} is not a known key{hint}{did_you_mean(key, known)}; known keys: {', '.join(known)}"


def validation_problems(exc: Any, model: Any, hint: str = "") -> str:
    """A pydantic ``ValidationError`` of ``model`` on one line: each unknown key named with a
    close match and the keys known where it stands (``hint`` follows "not a known key"), then
    the other problems."""
    return "; ".join(validation_problem(err, model, hint) for err in exc.errors())


def validation_problem(err: dict[str, Any], model: Any, hint: str = "") -> str:
    """One error of a pydantic ``ValidationError`` (see :func:`validation_problems`)."""
    loc = err["loc"]
    where = ".".join(map(str, loc))
    if err["type"] == "extra_forbidden":
        known = sorted(_fields_at(model, loc[:-1]))
        where = where if len(where) <= 60 else f"{where[:60]}... ({len(where)} characters)"
        return (f"{where}: not a known key{hint}{did_you_mean(loc[-1], known)}; "
                f"known keys: {', '.join(known)}")
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """The field names of the (nested) pydantic model found along ``loc``."""
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        if not hasattr(annotation, "model_fields"):
            break
        model = annotation
    return list(getattr(model, "model_fields", {}))


def check_text_length(value: Any, limit: int, what: str) -> None:
    """Refuse a string longer than ``limit`` characters (before any work is done with it)."""
    if isinstance(value, str) and len(value) > limit:
        raise InputRefused(f"{what} is {len(value)} characters long; the limit is {limit}")


# -- JSON from users ----------------------------------------------------------------------------
_DEPTH_STEP = {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}


def read_text(path: str | os.PathLike, what: str, max_bytes: int = JSON_MAX_BYTES) -> str:
    """The UTF-8 text of a file the user named, refused with one clear message when it is
    missing, too large or not text."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InputRefused(f"{what} {path} is not a file: give a file path")
        if size > max_bytes:
            raise InputRefused(f"{what} {path} is {size} bytes, over the limit of {max_bytes}: is it the right file?")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputRefused(f"{what} {path} not found: check the path") from None
    except OSError as exc:
        raise InputRefused(f"{what} {path} cannot be read ({exc.strerror or exc}): check the path") from None
    return decode_text(data, f"{what} {path}")


def decode_text(data: bytes, what: str) -> str:
    """``data`` decoded as UTF-8 (a leading BOM dropped); a binary file is refused."""
    if b"\x00" in data[:65536]:
        raise InputRefused(f"{what} is not a text file (it holds NUL bytes): expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputRefused(f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}): "
                           "expected a text file") from None


def check_json_events(events: list[tuple[str, Any]], depth: int, what: str, max_depth: int = JSON_MAX_DEPTH) -> int:
    """Check a run of ijson ``basic_parse`` events against the nesting limit; returns the depth
    after them. Runs at C speed (no Python loop per event), so it can watch gigabyte files."""
    if not events:
        return depth
    steps = list(accumulate(map(_DEPTH_STEP.get, map(itemgetter(0), events), repeat(0)), initial=depth))
    deepest = max(steps)
    if deepest > max_depth:
        raise InputRefused(f"{what}: JSON nested {deepest} levels deep, over the limit of {max_depth}")
    return steps[-1]


@functools.cache
def _bracket_steps():
    """+1 for [ and {, -1 for ] and }, 0 for other bytes (numpy is imported on first use)."""
    import numpy as np

    steps = np.zeros(256, dtype=np.int8)
    steps[[ord("["), ord("{")]] = 1
    steps[[ord("]"), ord("}")]] = -1
    return steps


class JsonNesting:
    """Watches JSON bytes fed in chunks for nesting past ``max_depth`` (raising
    :class:`InputRefused`), at a few milliseconds per megabyte: numpy finds the brackets outside
    strings (quotes escaped by an odd run of backslashes are not string ends), carrying the
    depth, whether a string is open and the trailing backslashes from chunk to chunk."""

    def __init__(self, what: str, max_depth: int = JSON_MAX_DEPTH) -> None:
        self.what, self.max_depth = what, max_depth
        self.depth, self.in_string, self.backslashes = 0, False, 0

    def feed(self, chunk: bytes) -> None:
        """Account for the next chunk of the file."""
        import numpy as np

        if not chunk:
            return
        data = np.frombuffer(chunk, dtype=np.uint8)
        quotes = np.flatnonzero(data == ord('"'))
        if len(quotes) and (self.backslashes or b"\\" in chunk):
            quotes = quotes[~self._escaped(data, quotes)]
        table = _bracket_steps()
        brackets = np.flatnonzero(table[data])
        # A bracket after an odd number of (real) quotes, counting an open string, is inside a string.
        outside = (np.searchsorted(quotes, brackets) + self.in_string) % 2 == 0
        steps = table[data[brackets[outside]]].astype(np.int64)
        if len(steps):
            depths = np.cumsum(steps) + self.depth
            deepest = int(depths.max())
            if deepest > self.max_depth:
                raise InputRefused(f"{self.what}: JSON nested {deepest} levels deep, over the limit of {self.max_depth}")
            self.depth = int(depths[-1])
        self.in_string = bool((len(quotes) + self.in_string) % 2)
        tail = len(chunk) - len(chunk.rstrip(b"\\"))
        self.backslashes = tail if tail < len(chunk) else self.backslashes + tail

    def _escaped(self, data: Any, quotes: Any) -> Any:
        """Which quotes follow an odd run of backslashes (counting those the last chunk ended with)."""
        import numpy as np

        escaped = np.zeros(len(quotes), dtype=bool)
        after_backslash = data[np.maximum(quotes - 1, 0)] == ord("\\")
        after_backslash[quotes == 0] = self.backslashes > 0
        for i in np.flatnonzero(after_backslash).tolist():  # rare: counted one by one
            q = int(quotes[i])
            k = q
            while k > 0 and data[k - 1] == ord("\\"):
                k -= 1
            run = q - k + (self.backslashes if k == 0 else 0)
            escaped[i] = run % 2 == 1
        return escaped


def loads_json(text: str, what: str, *, max_depth: int = JSON_MAX_DEPTH, max_string: int = JSON_MAX_STRING) -> Any:
    """Parse JSON text with limits on nesting and string length (refused, not a crash or a hang)."""
    import ijson

    try:
        events = list(ijson.basic_parse(text.encode("utf-8")))
    except ijson.JSONError as exc:
        events = None
        problem = str(exc).splitlines()[0]
    if events is None:
        try:  # for the line and column of the mistake
            json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
        except RecursionError:
            problem = f"nested over {max_depth} levels deep"
        raise InputRefused(f"{what}: not JSON ({problem})")
    check_json_events(events, 0, what, max_depth)
    longest = max((len(v) for e, v in events if e in ("string", "map_key")), default=0)
    if longest > max_string:
        raise InputRefused(f"{what}: a JSON string of {longest} characters, over the limit of {max_string}")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputRefused(f"{what}: not JSON ({exc})") from None


def read_json(path: str | os.PathLike, what: str, *, max_bytes: int = JSON_MAX_BYTES,
              max_depth: int = JSON_MAX_DEPTH, max_string: int = JSON_MAX_STRING) -> Any:
    """A JSON file the user named, read with limits on size, nesting and string length."""
    return loads_json(read_text(path, what, max_bytes), f"{what} {path}", max_depth=max_depth, max_string=max_string)
