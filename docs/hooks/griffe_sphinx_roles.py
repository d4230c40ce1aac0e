"""Griffe extension: the docstrings' Sphinx roles as mkdocstrings cross-references.

The package's docstrings name other objects the Sphinx way: ``:class:`~adaptive_sde.X```,
``:func:`adaptive_sde.solve```, or relative to where they stand, ``:class:`Result```,
``:meth:`GaussianMixture.score_fn```. mkdocstrings renders docstrings as Markdown, where a
cross-reference is ``[title][identifier]`` and the autorefs plugin turns it into a link to the
object's entry on the API page. Once the package is loaded, this rewrites every role:

- the name is looked up as Sphinx would: as written, then in the scope of the object the
  docstring belongs to (its class, its module, the packages above);
- an object of the public API (reached from ``adaptive_sde``, ``adaptive_sde.diffusion`` or
  ``adaptive_sde.distributed`` without a private name on the way) becomes
  ``[`title`][its public path]``, which must resolve: a public object missing from the API page
  fails the strict build;
- anything else (a private module or helper, torch, torchsde) becomes plain code, `` `title` ``.

The title is the name as written, or its last component when it starts with ``~`` (Sphinx's
convention); ``:role:`title <target>``` keeps its title. Loaded by mkdocs.yml's mkdocstrings
options (``extensions``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

PUBLIC_MODULES = ("adaptive_sde", "adaptive_sde.diffusion", "adaptive_sde.distributed")
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(?P<body>[^`]+)`")
_TITLED = re.compile(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>")


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined under it (aliases, which point elsewhere, skipped)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def _is_public(path: str) -> bool:
    return not any(part.startswith("_") for part in path.split("."))


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`name``` in every docstring of the loaded package (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        self.public: dict[str, str] = {}  # canonical path -> public path

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kw: Any) -> None:
        if pkg.path != "adaptive_sde":
            return
        self._map_public(loader)
        for obj in _walk(pkg):
            docstring = obj.docstring
            if docstring is not None and ROLE.search(docstring.value):
                docstring.value = ROLE.sub(
                    lambda m, o=obj: self._rewrite(m, o, loader), docstring.value
                )

    def _map_public(self, loader: griffe.GriffeLoader) -> None:
        """The public path of each object the public modules export, and of their members."""

        def add(obj: griffe.Object | griffe.Alias, public: str, depth: int = 0) -> None:
            try:
                target = obj.final_target if obj.is_alias else obj
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return
            if target.package.path != "adaptive_sde":
                return  # re-exported from torch and the like: not ours to document
            self.public.setdefault(target.path, public)
            self.public.setdefault(public, public)
            if target.is_class and depth < 3:
                for name, member in target.members.items():
                    if not name.startswith("_"):
                        add(member, f"{public}.{name}", depth + 1)

        for module_path in PUBLIC_MODULES:
            module = loader.modules_collection[module_path]
            self.public.setdefault(module.path, module.path)
            names = module.exports if module.exports is not None else list(module.members)
            for name in names:
                name = str(name)
                if not name.startswith("_") and name in module.members:
                    add(module.members[name], f"{module_path}.{name}")

    def _lookup(self, name: str, scope: griffe.Object, loader: griffe.GriffeLoader) -> str | None:
        """The path of the object ``name`` names from ``scope``, as Sphinx would look it up."""
        name = name.lstrip(".")
        candidates = [name]
        at: griffe.Object | None = scope
        while at is not None:
            candidates.append(f"{at.path}.{name}")
            at = at.parent  # type: ignore[assignment]
        candidates += [f"{module}.{name}" for module in PUBLIC_MODULES]
        for path in candidates:
            try:
                found = loader.modules_collection[path]
            except (KeyError, ValueError):
                continue
            try:
                return str(found.final_target.path if found.is_alias else found.path)
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return str(path)
        return None

    def _rewrite(
        self, match: re.Match[str], obj: griffe.Object, loader: griffe.GriffeLoader
    ) -> str:
        body = match["body"].strip()
        titled = _TITLED.fullmatch(body)
        if titled:
            title, name = titled["title"], titled["target"].strip()
        else:
            name = body.lstrip("~")
            title = name.rsplit(".", 1)[-1] if body.startswith("~") else name
        scope = obj if obj.is_class or obj.is_module else (obj.parent or obj)
        path = self._lookup(name, scope, loader)
        public = self.public.get(path) if path else None
        if public is None and path is not None and _is_public(path):
            public = path
        if public is None or not public.startswith("adaptive_sde"):
            return f"`{title}`"
        return f"[`{title}`][{public}]"
