"""The programs supervisord runs (`python -m bokeh_stack.daemons.<name>`, named in config/topology.py): the
worker, the ops process, sign-in, the watchdogs, the restart counter, the upstreams watcher, the containers'
health checks and the app check. They import patches and config."""
