"""Hooks and instance overrides scoped to one call on one thread.

A pruned model may be called from several threads at once (a server that shares one model between
request threads). What a call puts on shared modules must act on that call alone: a hook wrapped
by :func:`this_thread` does nothing when another thread runs the module, and :func:`overriding`
gives the calling thread its own value of an instance attribute (a module's ``forward``, say)
while every other thread keeps the original. When the last call leaves, the instance is exactly
as before: its own attribute back, or none.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
_OVERRIDES: dict[tuple[int, str], "_PerThread"] = {}
_MISSING = object()


def this_thread(hook: Callable) -> Callable:
    """``hook``, made a no-op (returns ``None``: "change nothing") on every thread but the caller's."""
    owner = threading.get_ident()

    @functools.wraps(hook)
    def guarded(*args, **kwargs):
        if threading.get_ident() != owner:
            return None
        return hook(*args, **kwargs)

    return guarded


class _PerThread:
    """Installed as ``obj.name`` while any thread overrides it: each call goes to the calling
    thread's value, or to the original attribute on threads that override nothing."""

    def __init__(self, obj: Any, name: str):
        self.obj, self.name = obj, name
        self.own = name in vars(obj)
        self.previous = vars(obj).get(name)
        self.values: dict[int, Any] = {}

    def original(self) -> Any:
        if self.own:
            return self.previous
        return getattr(type(self.obj), self.name).__get__(self.obj, type(self.obj))

    def __call__(self, *args, **kwargs):
        value = self.values.get(threading.get_ident(), _MISSING)
        return (self.original() if value is _MISSING else value)(*args, **kwargs)


def original(obj: Any, name: str) -> Any:
    """``obj.name`` as it is outside every override (what an override should call through to)."""
    current = getattr(obj, name, None)
    return current.original() if isinstance(current, _PerThread) else current


@contextmanager
def overriding(obj: Any, name: str, value: Callable) -> Iterator[None]:
    """While active, ``obj.name(...)`` calls ``value`` on this thread only."""
    key, tid = (id(obj), name), threading.get_ident()
    with _LOCK:
        per_thread = _OVERRIDES.get(key)
        if per_thread is None:
            per_thread = _OVERRIDES[key] = _PerThread(obj, name)
            setattr(obj, name, per_thread)
        before = per_thread.values.get(tid, _MISSING)
        per_thread.values[tid] = value
    try:
        yield
    finally:
        with _LOCK:
            if before is _MISSING:
                del per_thread.values[tid]
            else:
                per_thread.values[tid] = before
            if not per_thread.values:
                del _OVERRIDES[key]
                if per_thread.own:
                    setattr(obj, name, per_thread.previous)
                else:
                    delattr(obj, name)
