"""What one process keeps between renders: the live preview renders the site many times, and a prose
edit changes one content file, so every other file's HTML, the compiled templates, the figures' bytes
and the search index can be taken from the last render.

Every value is kept under the content hashes of what decides it (a content file's text, an edition's
manifest, the labels, the templates), never under a file name or a time, so a kept value is the one
recomputing would give. The oldest values go first once ``LIMIT`` are kept.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable

LIMIT = 4096

_values: OrderedDict[Hashable, Any] = OrderedDict()


def get(key: Hashable, compute: Callable[[], Any]) -> Any:
    """The value kept under ``key``, or ``compute()``'s, kept from now on."""
    if key in _values:
        _values.move_to_end(key)
        return _values[key]
    value = compute()
    _values[key] = value
    if len(_values) > LIMIT:
        _values.popitem(last=False)
    return value


def kept(key: Hashable) -> bool:
    """Whether a value is kept under ``key`` (``get`` would not compute it)."""
    return key in _values


def clear() -> None:
    _values.clear()
