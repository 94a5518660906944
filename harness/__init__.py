"""The test and bench harness: real stacks on loopback ports and a Bokeh page-view client. Used by tests/ and
bench/ only; not part of the installed bokeh_stack package."""
