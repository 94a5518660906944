"""bokeh-stack: serve directory-format Bokeh apps with nginx in front of supervised workers."""

__version__ = "0.1.0"
