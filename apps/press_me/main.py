"""Press me.

A button: every press writes the next number at a random place in a black plot, colours cycling. Signed in,
it greets you by name.
"""

import html
import random

from bokeh.layouts import column
from bokeh.models import Button, Div
from bokeh.palettes import RdYlBu3
from bokeh.plotting import curdoc, figure

from bokeh_stack import current_user

doc = curdoc()
plot = figure(
    x_range=(0, 100),
    y_range=(0, 100),
    toolbar_location=None,
    height=450,
    sizing_mode="stretch_width",
    background_fill_color="black",
    border_fill_color="black",
    outline_line_color=None,
)
plot.grid.grid_line_color = None
plot.axis.visible = False
numbers = plot.text(
    x=[], y=[], text=[], text_color=[], text_font_size="26px", text_baseline="middle", text_align="center"
)
source = numbers.data_source
source.name = "numbers"
presses = 0


def press() -> None:
    global presses
    source.stream(
        {
            "x": [random.random() * 70 + 15],
            "y": [random.random() * 70 + 15],
            "text": [str(presses)],
            "text_color": [RdYlBu3[presses % 3]],
        }
    )
    presses += 1


button = Button(label="Press me", button_type="primary")
button.on_event("button_click", lambda event: press())
user = current_user(doc)  # the signed-in user's name (settings auth.mode), None without sign-in
greeting = Div(text=f"Signed in as <b>{html.escape(user)}</b>" if user else "", name="greeting", visible=bool(user))
doc.add_root(column(greeting, button, plot, sizing_mode="stretch_width"))
doc.title = "Press me"
