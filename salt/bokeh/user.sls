{%- from "bokeh/map.jinja" import bokeh with context %}

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
