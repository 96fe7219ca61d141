"""Griffe extension: Sphinx roles in docstrings (``:func:`lower```) rendered as inline code.

The package's docstrings cross-reference with Sphinx roles; mkdocstrings renders Markdown, where
they would show as ``:func:`` text. ``~a.b.c`` shows as ``c``, as in Sphinx.
"""
import re

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|obj|exc):`(~?)([^`]+)`")


def as_code(match):
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(as_code, obj.docstring.value)
