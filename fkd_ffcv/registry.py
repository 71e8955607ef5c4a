"""Name -> builder tables for the things that come in families (training modes, models,
teachers), so a new family plugs in by registering itself, with no edits elsewhere; and the
`<module>:<function>` entry points that serve the names no family claims (a student
architecture, a teacher spec)."""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Optional


class Registry:
    """Builders by exact name, or by a prefix that ends a name's family ('timm:'); the longest
    matching prefix wins. `default` serves names that match nothing (None: they are refused)."""

    def __init__(self, what: str, default: Optional[Callable] = None):
        self.what, self.default = what, default
        self._exact: Dict[str, Callable] = {}
        self._prefixes: Dict[str, Callable] = {}

    def register(self, name: str, prefix: bool = False):
        """Decorator: `@MODELS.register('resnet50')`, `@TEACHERS.register('torchvision:',
        prefix=True)`. Registering a name twice is refused, so families cannot shadow each
        other by accident."""
        def add(builder):
            table = self._prefixes if prefix else self._exact
            if name in table:
                raise ValueError(f"{self.what} {name!r} is already registered")
            table[name] = builder
            return builder
        return add

    def unregister(self, name: str) -> None:
        """Remove a name or prefix (for tests that register a toy family)."""
        self._exact.pop(name, None)
        self._prefixes.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None

    def registered(self, name: str) -> bool:
        """Whether a registered name or prefix (not the default) serves `name`."""
        return name in self._exact or any(name.startswith(p) for p in self._prefixes)

    def find(self, name: str) -> Optional[Callable]:
        if name in self._exact:
            return self._exact[name]
        matches = [p for p in self._prefixes if name.startswith(p)]
        if matches:
            return self._prefixes[max(matches, key=len)]
        return self.default

    def __getitem__(self, name: str) -> Callable:
        builder = self.find(name)
        if builder is None:
            raise ValueError(f"unknown {self.what} {name!r}; known: {self.describe()}")
        return builder

    def items(self) -> list:
        """(name, builder) of the exact names."""
        return sorted(self._exact.items())

    def names(self) -> list:
        return sorted(self._exact) + sorted(f"{p}..." for p in self._prefixes)

    def describe(self) -> str:
        return ', '.join(self.names())


def find_entry_point(spec: str) -> Optional[Callable]:
    """The function a `<module>:<function>` spec names, or None where the spec is not of that
    form or names nothing importable (an ImportError inside the module counts as nothing)."""
    module, _, function = spec.partition(':')
    if not module or not function:
        return None
    try:
        return getattr(importlib.import_module(module), function, None)
    except ImportError:
        return None


def call_entry_point(spec: str, what: str, known: str) -> tuple:
    """(model, preprocessing dict) from a `<module>:<function>` spec: the function returns a
    model, or (model, dict with input_size, interpolation, mean, std). `what` and `known` name
    the spec's role and the alternatives in errors."""
    module, _, function = spec.partition(':')
    if not module or not function:
        raise ValueError(f"unknown {what} {spec!r}; known: {known}, or <module>:<function>")
    try:
        build = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what} {spec!r}: {e}") from None
    try:
        made = build()
    except ImportError as e:  # a package the entry point needs (efficientnet_lite0: .[teacher])
        raise ValueError(f"{what} {spec!r} needs a package that is not installed: {e}") from None
    return made if isinstance(made, tuple) else (made, {})
