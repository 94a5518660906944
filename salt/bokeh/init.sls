{#- The whole stack on this host: bokeh-stack and what it needs, its settings and apps, the running service. #}
{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.package
  - {{ tplroot }}.config
  - {{ tplroot }}.service
