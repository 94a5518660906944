{%- from "bokeh/map.jinja" import bokeh, stack, stack_args, running with context %}
{#- Removes what the formula installed: the stack (stopped first), its files, its user. The distribution's
    packages (python3, nginx) stay: other software may use them. -#}

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
  file.absent:
    - name: /etc/systemd/system/bokeh-stack.service
{%- endif %}

bokeh-clean-files:
  file.absent:
    - names:
      - {{ bokeh.root }}
      - {{ bokeh.config_dir }}
      - {{ bokeh.runtime_dir }}
      - {{ bokeh.log_dir }}
    - require:
      - cmd: bokeh-clean-stopped

bokeh-clean-user:
  user.absent:
    - name: {{ bokeh.user }}
    - require:
      - file: bokeh-clean-files
  group.absent:
    - name: {{ bokeh.group }}
    - require:
      - user: bokeh-clean-user
