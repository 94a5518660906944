{#- The stack runs: supervisord with the workers and nginx, a boot service where systemd is PID 1. -#}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import bokeh, stack, stack_args, running with context %}

include:
  - {{ tplroot }}.config

{%- if bokeh.systemd %}

# systemd is PID 1: supervisord (and with it the workers and nginx) is a boot service.
bokeh-service-unit:
  file.managed:
    - name: /etc/systemd/system/bokeh-stack.service
    - source: salt://{{ tplroot }}/files/bokeh-stack.service.jinja
    - template: jinja
    - context:
        stack: {{ stack }}
        stack_args: {{ stack_args }}

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
    - name: {{ stack }} supervisord --daemon {{ stack_args }}
    - unless: {{ running }}
    - require:
      - cmd: bokeh-config-applied
{%- endif %}
