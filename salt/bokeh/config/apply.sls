{#- bokeh-stack's own state from the settings: the workers' secret, the sign-in users, and the rendered configs
    applied to the running stack. -#}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import bokeh, stack, stack_args, runs with context %}

include:
  - {{ tplroot }}.package.install
  - {{ tplroot }}.config.settings

# One secret signs every worker's session ids: from the pillar, or generated here once; never shown. Only where
# this host runs workers: the sign-in process (on a balancer) has a key of its own, made by `bokeh-stack apply`
# beside the users file.
bokeh-config-secret:
  cmd.run:
    - name: {{ stack }} secret --stateful {{ "--from-stdin " if bokeh.secret }}{{ stack_args }}
    - onlyif: {{ runs("workers") }}
    - stateful:
      - test_name: {{ stack }} secret --stateful --dry-run {{ "--from-stdin " if bokeh.secret }}{{ stack_args }}
{%- if bokeh.secret %}
    - stdin: {{ bokeh.secret | json }}
    - output_loglevel: quiet
{%- endif %}
    - require:
      - cmd: bokeh-venv-package
      - file: bokeh-config-settings
    - require_in:
      - cmd: bokeh-config-applied

{%- for name, user in bokeh.users | dictsort %}

# A user who may sign in (auth.mode password): only its hash is written, and only when the password or the groups
# differ from what the users file holds.
bokeh-signin-user-{{ name }}:
  cmd.run:
    - name: {{ stack }} users add {{ name | quote }} --password-stdin --stateful{% for group in user.get("groups", []) %} --group {{ group | quote }}{% endfor %} {{ stack_args }}
    - stateful:
      - test_name: {{ stack }} users add {{ name | quote }} --password-stdin --stateful --dry-run{% for group in user.get("groups", []) %} --group {{ group | quote }}{% endfor %} {{ stack_args }}
    - stdin: {{ user.password | json }}
    - output_loglevel: quiet
    - require:
      - cmd: bokeh-venv-package
      - file: bokeh-config-settings
      - user: bokeh-user
    - require_in:
      - cmd: bokeh-config-applied
{%- endfor %}

# Renders nginx and supervisord configs from the settings (nginx -t first: a bad config never replaces a good
# one), then, if the stack runs, applies what changed: nginx reloads, workers restart one at a time.
bokeh-config-applied:
  cmd.run:
    - name: {{ stack }} apply --stateful {{ stack_args }}
    - stateful:
      - test_name: {{ stack }} apply --stateful --dry-run {{ stack_args }}
    - require:
      - cmd: bokeh-venv-package
      - file: bokeh-config-settings
      - file: bokeh-apps
      - user: bokeh-user
      - pkg: bokeh-package-nginx
      - pkg: bokeh-package-redis
