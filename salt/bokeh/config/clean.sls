{#- The settings, the apps, and what the stack wrote from them: rendered configs, the secret, the logs. -#}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import bokeh with context %}

include:
  - {{ tplroot }}.service.clean

bokeh-clean-config:
  file.absent:
    - names:
      - {{ bokeh.config_dir }}
      - {{ bokeh.settings.apps_dir }}
      - {{ bokeh.runtime_dir }}
      - {{ bokeh.log_dir }}
    - require:
      - cmd: bokeh-clean-stopped
