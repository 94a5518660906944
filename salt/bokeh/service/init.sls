{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.service.running
