"""Sphinx extension: keep the built book self-contained (no resource from the network).

sphinx-thebe (always loaded by Jupyter Book 1.x) injects a script naming
``https://unpkg.com/thebe...`` on every page, to be fetched when a reader presses a
"live code" button this book never shows. This extension drops that script and any
other script or stylesheet whose address is remote, so a page opened from disk
(file://) loads only files that sit next to it. ``evaluation.report.book`` scans the
built HTML, CSS and JS afterwards and fails the build if anything remote is left.
"""

from __future__ import annotations

import re

_REMOTE = re.compile(r"^(https?:)?//", re.IGNORECASE)
_THEBE = ("sphinx-thebe.js", "thebe")


def _is_remote_asset(asset) -> bool:
    filename = getattr(asset, "filename", asset if isinstance(asset, str) else "") or ""
    body = (getattr(asset, "attributes", None) or {}).get("body", "") or ""
    if _REMOTE.match(filename):
        return True
    if "https://" in body or "http://" in body:
        return True
    return filename.endswith(_THEBE[0])


def _strip_remote(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        files = context.get(key)
        if files:
            context[key] = [f for f in files if not _is_remote_asset(f)]


def setup(app):
    # Run after every other html-page-context handler (mathjax, thebe, the theme).
    app.connect("html-page-context", _strip_remote, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
