"""Load plain-data pickles (the refer ``refs(*).p`` files) without letting them run code.

``pickle.load`` executes whatever callable a pickle names (``os.system``, ``builtins.eval``, ...), so a
``.p`` file from a mirror is as dangerous as a script. Plain containers and scalars (dict, list, tuple,
str, bytes, int, float, bool, None) are built by opcodes that name no callable; the only globals a
plain-data pickle needs are ``set``/``frozenset`` (protocols 0-3 have no set opcode) and
``_codecs.encode`` (how Python 3 writes ``bytes`` at protocols 0-2). Those three are replaced by wrappers
that accept only plain arguments; every other global is refused before anything is called.

Python 2 pickles store ``str`` as 8-bit strings: ``encoding`` says how to decode them (``"latin1"``
always succeeds; ``"bytes"`` keeps them as ``bytes`` for the caller to decode).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from vlrepro.data.real.errors import DatasetError, missing

ACCEPTED = "dict, list, tuple, set, frozenset, str, bytes, int, float, bool, None"


class _Refused(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _plain_items(name: str, args: tuple) -> tuple:
    # set(iterable) with an arbitrary iterable would call that object's __iter__; accept only what
    # the pickle itself built as a list or tuple (that is how every protocol writes a set's items).
    if len(args) > 1 or (args and not isinstance(args[0], list | tuple)):
        raise _Refused(f"builtins.{name} called with {[type(a).__name__ for a in args]} (expected one list)")
    return args[0] if args else ()


def _set(*args: Any) -> set:
    return set(_plain_items("set", args))


def _frozenset(*args: Any) -> frozenset:
    return frozenset(_plain_items("frozenset", args))


def _latin1_bytes(*args: Any) -> bytes:
    # Python 3 writes b"..." at protocols 0-2 as _codecs.encode("...", "latin1"); any other codec
    # or argument type is not something a plain-data pickle contains.
    if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode called with {args!r:.80} (expected (str, 'latin1'))")
    return args[0].encode("latin1")


_ALLOWED = {
    ("builtins", "set"): _set,
    ("__builtin__", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("__builtin__", "frozenset"): _frozenset,
    ("_codecs", "encode"): _latin1_bytes,
}


class _PlainUnpickler(pickle.Unpickler):
    # GLOBAL, STACK_GLOBAL, INST, OBJ and the EXT* opcodes all resolve callables through find_class,
    # so refusing here means nothing outside _ALLOWED can reach REDUCE / NEWOBJ / BUILD.
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {pid!r:.80}")


def safe_loads(data: bytes, *, source: str = "<bytes>", encoding: str = "latin1") -> Any:
    """Unpickle ``data`` if it holds only plain containers and scalars; else raise ``DatasetError``.

    ``source`` names the data in error messages (a file name).
    """
    try:
        return _PlainUnpickler(io.BytesIO(data), encoding=encoding).load()
    except _Refused as e:
        raise DatasetError(
            f"{source}: refused to unpickle {e.what}; only plain data ({ACCEPTED}) is accepted, and loading "
            "anything else could run code. Get the file from its official source."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            UnicodeDecodeError, MemoryError, RecursionError) as e:
        raise DatasetError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e


def safe_load(path: Path, *, encoding: str = "latin1") -> Any:
    """Unpickle the file ``path`` with :func:`safe_loads`; a missing file is a ``DatasetError``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise missing(path, "a pickle of plain data") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from e
    return safe_loads(data, source=str(path), encoding=encoding)
