{#- The stack stopped, and no longer a boot service. -#}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import bokeh, stack, stack_args, running with context %}

# Returns once supervisord has stopped everything and exited.
bokeh-clean-stopped:
  cmd.run:
    - name: {{ stack }} stop {{ stack_args }}
    - onlyif: {{ running }}

{%- if bokeh.systemd %}

bokeh-clean-service:
  service.dead:
    - name: bokeh-stack
    - enable: False
    - require:
      - cmd: bokeh-clean-stopped
  file.absent:
    - name: /etc/systemd/system/bokeh-stack.service
{%- endif %}
