"""Compile cache: one compiled function per code-changing config, in memory and on disk.

The key is the full :class:`fa4_sm120.fwd.FwdConfig` (tile, stages, threads, pack-GQA and its ratio,
dtype, head dims, causal/local, the family's arch) plus the DSL version and the compile target.
Sequence lengths, batch, head counts and the softmax scale are runtime arguments of the compiled
function and never enter the key. Compiles are serialised by a lock (the DSL is not re-entrant);
lookups are a dict read.

On an in-memory miss, a key that carries the running DSL version (every key ``fa4_torch.launch`` and
``fa4_torch.launch_bwd`` make) goes through the persistent layer, :mod:`fa4_torch.disk_cache`: loaded
from ``$FA4_CACHE_DIR`` (default ``~/.cache/fa4``) when another process compiled it before, else
compiled and written there. Other keys (tests, tools) stay in memory unless ``persistent=True``.
:func:`dsl_version` is :func:`fa4_torch.disk_cache.dsl_version` (re-exported: the keys carry it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fa4_torch import disk_cache
from fa4_torch.disk_cache import dsl_version

__all__ = ["CompileCache", "dsl_version"]


class CompileCache:
    """``persistent``: ``None`` (default) puts on disk the keys holding :func:`dsl_version`'s value;
    ``True`` every key with a stable text; ``False`` none."""

    def __init__(self, persistent: bool | None = None) -> None:
        self._entries: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self.persistent = persistent

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
                fn = self._load_or_build(key, build)
                self._entries[key] = fn
        return fn

    def _persists(self, key) -> bool:
        if self.persistent is not None:
            return self.persistent
        parts = key if isinstance(key, tuple) else (key,)
        try:
            ver = dsl_version()
        except ImportError:  # no DSL: nothing real compiles
            return False
        return any(isinstance(p, str) and p == ver for p in parts)

    def _load_or_build(self, key, build):
        if not self._persists(key):
            return build()
        return disk_cache.load_or_build(key, build)

    def clear(self) -> None:
        """Forget the in-memory entries (the files on disk stay; see ``docs/troubleshooting.md``)."""
        with self._lock:
            self._entries.clear()
