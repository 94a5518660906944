{%- set tplroot = tpldir.split("/")[0] %}
include:
  - {{ tplroot }}.package.install
