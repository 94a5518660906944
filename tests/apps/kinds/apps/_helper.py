"""A helper module beside the apps: its name starts with _, so it is not an app."""

GREETING = "not an app"
