{%- from "bokeh/map.jinja" import bokeh with context %}

include:
  - bokeh.package

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
