{%- from "bokeh/map.jinja" import bokeh, running with context %}
{#- Removes what the formula installed: the stack (stopped first), its files, its user. The distribution's
    packages (python3, nginx) stay: other software may use them. -#}

# supervisorctl shutdown returns at once; wait (60 s at most) until supervisord has stopped everything and exited.
bokeh-clean-stopped:
  cmd.run:
    - name: >-
        pid=$(cat {{ bokeh.runtime_dir }}/supervisord.pid) &&
        {{ bokeh.venv }}/bin/supervisorctl -c {{ bokeh.runtime_dir }}/supervisord.conf shutdown &&
        for i in $(seq 300); do grep -qs "^State:[[:space:]]*[^Z]" /proc/$pid/status || exit 0; sleep 0.2; done; exit 1
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
