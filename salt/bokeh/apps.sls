{%- from "bokeh/map.jinja" import bokeh with context %}

bokeh-apps:
  file.recurse:
    - name: {{ bokeh.settings.apps_dir }}
    - source: {{ bokeh.source }}apps
    - clean: True
    - exclude_pat: E@__pycache__
    - makedirs: True
