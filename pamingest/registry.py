"""One lazy registry for every plug-in seam: sources, decoders, annotation readers, labellers.

Built-ins are registered exactly as other packages register theirs, as
entry points in ``pyproject.toml``::

    [project.entry-points."pamingest.decoders"]
    hls = "pamingest.decode.hls:HlsDecoder"

Nothing is imported until a name is asked for, so a broken plug-in only
fails the command that asks for it, with an error naming the entry point
and the reason; the other names keep working.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from .errors import PluginError, PluginNotFoundError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

# kind -> (entry point group, what one entry is called in messages)
GROUPS = {
    "sources": ("pamingest.sources", "source"),
    "decoders": ("pamingest.decoders", "decoder"),
    "annotation_readers": ("pamingest.annotation_readers", "annotation format"),
    "labelers": ("pamingest.labelers", "labeler"),
    "exporters": ("pamingest.exporters", "export format"),
}


class Registry:
    """Names -> objects of one entry point group, loaded when first asked for.

    Parameters
    ----------
    group : str
        Entry point group, e.g. ``pamingest.decoders``.
    what : str
        What the group holds, for error messages (``decoder``).
    """

    def __init__(self, group: str, what: str) -> None:
        self.group = group
        self.what = what
        self._loaded: dict[str, Any] = {}

    def _entry_points(self) -> dict[str, EntryPoint]:
        # imported lazily (importlib.metadata is slow to import): `import pamingest` stays under
        # 0.4 s (benchmarks/startup.py)
        from importlib.metadata import entry_points

        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            # pamingest's own entry point wins over a plug-in of the same name.
            if ep.name not in found or ep.value.startswith("pamingest."):
                found[ep.name] = ep
        return found

    def names(self) -> list[str]:
        return sorted(self._entry_points())

    def __contains__(self, name: str) -> bool:
        return name in self._entry_points()

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (imported now if it was not yet)."""
        if name in self._loaded:
            return self._loaded[name]
        eps = self._entry_points()
        if name not in eps:
            known = ", ".join(sorted(eps)) or "none"
            hint = "" if eps else " (is pamingest installed? its built-ins are registered as entry points)"
            raise PluginNotFoundError(f"unknown {self.what} {name!r}: known {known}{hint}; others are added "
                                      f"through the {self.group!r} entry point group")
        try:
            obj = eps[name].load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plug-in is reported, not raised raw
            raise PluginError(f"{self.what} {name!r}: its entry point {eps[name].value!r} cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from exc
        self._loaded[name] = obj
        return obj


@functools.lru_cache(maxsize=None)
def registry(kind: str) -> Registry:
    """The registry of ``sources``, ``decoders``, ``annotation_readers`` or ``labelers``."""
    group, what = GROUPS[kind]
    return Registry(group, what)


def build(kind: str, spec: Any) -> Any:
    """An object from a spec: a name, ``(name, options)``, or an object already built."""
    if isinstance(spec, str):
        return registry(kind).get(spec)()
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        name, options = spec
        return registry(kind).get(name)(**dict(options or {}))
    return spec
