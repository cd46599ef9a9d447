"""In-process compile cache: one compiled function per code-changing config.

The key is the full :class:`fa4_sm120.fwd.FwdConfig` (tile, stages, threads, pack-GQA and its ratio,
dtype, head dims, causal/local, the family's arch) plus the DSL version and the compile target.
Sequence lengths, batch, head counts and the softmax scale are runtime arguments of the compiled
function and never enter the key. Compiles are serialised by a lock (the DSL is not re-entrant);
lookups are a dict read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["CompileCache", "dsl_version"]


def dsl_version() -> str:
    import cutlass

    return getattr(cutlass, "__version__", "unknown")


class CompileCache:
    def __init__(self) -> None:
        self._entries: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self):
        return list(self._entries)

    def get(self, key):
        return self._entries.get(key)

    def get_or_compile(self, key, build: Callable[[], Any]):
        fn = self._entries.get(key)
        if fn is not None:
            return fn
        with self._lock:
            fn = self._entries.get(key)
            if fn is None:
                fn = build()
                self._entries[key] = fn
        return fn

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
