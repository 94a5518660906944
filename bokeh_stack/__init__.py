"""bokeh-stack: serve directory-format Bokeh apps with nginx in front of supervised workers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bokeh-stack")  # pyproject.toml's, the one place it is written
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

from bokeh_stack.identity import current_user  # noqa: E402
from bokeh_stack.resume import resumed  # noqa: E402

__all__ = ["__version__", "current_user", "resumed"]
