"""What a worker changes in Bokeh and tornado, each change checked before it is made (config/expect.py)."""
