{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import bokeh with context %}

bokeh-config-directory:
  file.directory:
    - name: {{ bokeh.config_dir }}
    - mode: "0755"
    - makedirs: True

bokeh-config-settings:
  file.managed:
    - name: {{ bokeh.settings_file }}
    - contents: |
        # Managed by Salt (pillar bokeh:settings). The keys are bokeh-stack's settings: bokeh_stack/config/defaults.yaml.
        {{ bokeh.settings | yaml(False) | indent(8) }}
    - mode: "0644"
    - require:
      - file: bokeh-config-directory

bokeh-apps:
  file.recurse:
    - name: {{ bokeh.settings.apps_dir }}
    - source: {{ bokeh.source }}apps
    - clean: True
    - exclude_pat: E@__pycache__
    - makedirs: True
