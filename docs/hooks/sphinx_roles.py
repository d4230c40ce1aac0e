"""mkdocs hook: Sphinx cross-reference roles in the docstrings, rendered as code.

The package's docstrings name other objects the Sphinx way, ``:class:`~adaptive_sde.X```; in
HTML that arrives as ``:class:<code>~adaptive_sde.X</code>``. This shows the name as code, the
last component only when the name starts with ``~`` (Sphinx's convention).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>(~?)([\w.]+)</code>")


def _name(match: re.Match[str]) -> str:
    short, name = match.group(1), match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if short else name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_name, html)
