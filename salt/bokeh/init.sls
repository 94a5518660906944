include:
  - bokeh.package
  - bokeh.user
  - bokeh.venv
  - bokeh.apps
  - bokeh.config
  - bokeh.service
