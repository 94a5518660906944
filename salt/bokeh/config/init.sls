{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.config.settings
  - {{ tplroot }}.config.apply
