{#- bokeh-stack and what it needs: the distribution's packages, the stack's system user, a venv with the pinned
    dependencies and the bokeh-stack wheel; nginx where bokeh-stack says this host runs it. -#}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import bokeh, runs with context %}

include:
  - {{ tplroot }}.config.settings

bokeh-package-installed:
  pkg.installed:
    - pkgs: {{ bokeh.pkgs.common | json }}

bokeh-user-group:
  group.present:
    - name: {{ bokeh.group }}
    - system: True

bokeh-user:
  user.present:
    - name: {{ bokeh.user }}
    - gid: {{ bokeh.group }}
    - system: True
    - home: {{ bokeh.root }}
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: bokeh-user-group

bokeh-venv-lock:
  file.managed:
    - name: {{ bokeh.root }}/requirements.lock
    - source: {{ bokeh.source }}requirements.lock
    - makedirs: True

# The bokeh-stack wheel, built once from the checkout (`make wheel`): the same package the images install.
bokeh-venv-wheel:
  file.recurse:
    - name: {{ bokeh.root }}/dist
    - source: {{ bokeh.source }}dist
    - include_pat: "*.whl"
    - clean: True
    - makedirs: True

bokeh-venv-created:
  cmd.run:
    - name: {{ bokeh.python }} -m venv {{ bokeh.venv }}
    - creates: {{ bokeh.venv }}/bin/python
    - require:
      - pkg: bokeh-package-installed

# The pinned dependencies; installed again only when the lock file changes (or an install failed).
bokeh-venv-dependencies:
  cmd.run:
    - name: {{ bokeh.venv }}/bin/pip install --quiet -r {{ bokeh.root }}/requirements.lock && cp {{ bokeh.root }}/requirements.lock {{ bokeh.venv }}/installed.lock
    - unless: cmp -s {{ bokeh.root }}/requirements.lock {{ bokeh.venv }}/installed.lock
    - env: {{ bokeh.pip_env | json }}
    - require:
      - cmd: bokeh-venv-created
      - file: bokeh-venv-lock

# bokeh-stack itself; installed again only when the wheel changes.
bokeh-venv-package:
  cmd.run:
    - name: >-
        {{ bokeh.venv }}/bin/pip install --quiet --no-deps --force-reinstall {{ bokeh.root }}/dist/*.whl &&
        sha256sum {{ bokeh.root }}/dist/*.whl > {{ bokeh.venv }}/installed-wheel.sha256
    - unless: sha256sum {{ bokeh.root }}/dist/*.whl | cmp -s - {{ bokeh.venv }}/installed-wheel.sha256
    - env: {{ bokeh.pip_env | json }}
    - require:
      - cmd: bokeh-venv-dependencies
      - file: bokeh-venv-wheel

# nginx where this host runs it (settings role): bokeh-stack says so from the settings file (and the apps it names).
bokeh-package-nginx:
  pkg.installed:
    - pkgs: {{ bokeh.pkgs.balancer | json }}
    - onlyif: {{ runs("nginx") }}
    - require:
      - cmd: bokeh-venv-package
      - file: bokeh-config-settings
      - file: bokeh-apps

# nginx runs under bokeh-stack's supervisord with its own config; the distribution's service would hold the port.
bokeh-package-distro-nginx-stopped:
{%- if bokeh.systemd %}
  service.dead:
    - name: nginx
    - enable: False
    - onlyif: {{ runs("nginx") }}
{%- else %}
  # No init system to ask (a container, a chroot): stop the one apt may have started, by its own pid file.
  cmd.run:
    - name: /usr/sbin/nginx -s quit
    - onlyif:
      - {{ runs("nginx") }}
      - test -s /run/nginx.pid && kill -0 "$(cat /run/nginx.pid)"
{%- endif %}
    - require:
      - pkg: bokeh-package-nginx

# redis-server where this host runs it for the workers' session records (settings redis.run).
bokeh-package-redis:
  pkg.installed:
    - pkgs: {{ bokeh.pkgs.redis | json }}
    - onlyif: {{ runs("redis") }}
    - require:
      - cmd: bokeh-venv-package
      - file: bokeh-config-settings
      - file: bokeh-apps

# It runs under bokeh-stack's supervisord with its own config and password; the distribution's would hold the port.
bokeh-package-distro-redis-stopped:
{%- if bokeh.systemd %}
  service.dead:
    - name: redis-server
    - enable: False
    - onlyif: {{ runs("redis") }}
{%- else %}
  # No init system to ask: stop the one apt may have started, by its own pid file.
  cmd.run:
    - name: kill "$(cat /run/redis/redis-server.pid)"
    - onlyif:
      - {{ runs("redis") }}
      - test -s /run/redis/redis-server.pid && kill -0 "$(cat /run/redis/redis-server.pid)"
{%- endif %}
    - require:
      - pkg: bokeh-package-redis
