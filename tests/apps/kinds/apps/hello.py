"""Hello from one file.

A single-file app: apps/hello.py is served at /hello.
"""

from bokeh.models import Div
from bokeh.plotting import curdoc

curdoc().add_root(Div(text="hello from a script", name="hello"))
