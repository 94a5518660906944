{#- Removes what the formula installed, in the reverse order: the service (stopped first), the settings and the
    stack's files, then bokeh-stack and its user. The distribution's packages (python3, nginx) stay: other
    software may use them. #}
{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.service.clean
  - {{ tplroot }}.config.clean
  - {{ tplroot }}.package.clean
