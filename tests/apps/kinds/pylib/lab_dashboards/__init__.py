"""Dashboards of a program's own, as function apps (setting function_apps), not installed: on python_path."""
