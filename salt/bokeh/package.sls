{%- from "bokeh/map.jinja" import bokeh with context %}

bokeh-package-installed:
  pkg.installed:
    - pkgs: {{ (bokeh.pkgs.common + (bokeh.pkgs.balancer if bokeh.balancer else [])) | json }}

{%- if bokeh.balancer %}

# nginx runs under bokeh-stack's supervisord with its own config; the distribution's service would hold the port.
bokeh-package-distro-nginx-stopped:
{%- if bokeh.systemd %}
  service.dead:
    - name: nginx
    - enable: False
{%- else %}
  # No init system to ask (a container, a chroot): stop the one apt may have started, by its own pid file.
  cmd.run:
    - name: /usr/sbin/nginx -s quit
    - onlyif: test -s /run/nginx.pid && kill -0 "$(cat /run/nginx.pid)"
{%- endif %}
    - require:
      - pkg: bokeh-package-installed
{%- endif %}
