base:
  '*':
    - bokeh
