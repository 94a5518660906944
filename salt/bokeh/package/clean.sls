{#- bokeh-stack (its venv and wheel) and its system user. The distribution's packages stay: other software may
    use them. -#}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import bokeh with context %}

include:
  - {{ tplroot }}.config.clean

bokeh-clean-package:
  file.absent:
    - name: {{ bokeh.root }}
    - require:
      - file: bokeh-clean-config

bokeh-clean-user:
  user.absent:
    - name: {{ bokeh.user }}
    - require:
      - file: bokeh-clean-package
  group.absent:
    - name: {{ bokeh.group }}
    - require:
      - user: bokeh-clean-user
