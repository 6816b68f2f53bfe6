"""Partnership impact evaluation: data, matching, difference-in-differences, reporting.

The package flows one way: ``data`` (schemas, validation, store, generator) ->
study definitions -> matching -> ``estimators`` -> ``inference``/``diagnostics`` ->
effects -> ``report``. Estimators are pure functions of a tidy panel.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("partnership-impact")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
