{%- from "bokeh/map.jinja" import bokeh with context %}

include:
  - bokeh.package

{%- for part in ("bokeh_stack", "nginx", "supervisor") %}

bokeh-venv-source-{{ part }}:
  file.recurse:
    - name: {{ bokeh.root }}/{{ part }}
    - source: {{ bokeh.source }}{{ part }}
    - clean: True
    - exclude_pat: E@__pycache__
    - makedirs: True
{%- endfor %}

bokeh-venv-lock:
  file.managed:
    - name: {{ bokeh.root }}/requirements.lock
    - source: {{ bokeh.source }}requirements.lock

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

# bokeh_stack is imported from {{ bokeh.root }}, beside the templates it renders.
bokeh-venv-package-path:
  cmd.run:
    - name: {{ bokeh.venv }}/bin/python -c "import site; open(site.getsitepackages()[0] + '/bokeh-stack.pth', 'w').write('{{ bokeh.root }}\n')"
    - unless: cd / && {{ bokeh.venv }}/bin/python -c "import bokeh_stack"
    - require:
      - cmd: bokeh-venv-dependencies
      - file: bokeh-venv-source-bokeh_stack
