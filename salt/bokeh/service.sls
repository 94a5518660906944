{%- from "bokeh/map.jinja" import bokeh, running with context %}
{%- set conf = bokeh.runtime_dir ~ "/supervisord.conf" %}

include:
  - bokeh.config

{%- if bokeh.systemd %}

# systemd is PID 1: supervisord (and with it the workers and nginx) is a boot service.
bokeh-service-unit:
  file.managed:
    - name: /etc/systemd/system/bokeh-stack.service
    - source: salt://bokeh/files/bokeh-stack.service.jinja
    - template: jinja
    - context:
        bokeh: {{ bokeh | json }}

bokeh-service-running:
  service.running:
    - name: bokeh-stack
    - enable: True
    - require:
      - cmd: bokeh-config-applied
    - watch:
      - file: bokeh-service-unit
{%- else %}

# No systemd as PID 1 (a container, a chroot): service.running would do nothing, so start supervisord here.
bokeh-service-running:
  cmd.run:
    - name: BOKEH_SECRET_KEY="$(cat {{ bokeh.secret_file }} 2>/dev/null)" {{ bokeh.venv }}/bin/supervisord -c {{ conf }}
    - unless: {{ running }}
    - require:
      - cmd: bokeh-config-applied
{%- endif %}
