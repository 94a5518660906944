"""Turning settings into a running stack: render the configs, talk to supervisord, apply changes without
dropping users, start and stop, users and file modes. The CLI's; it imports config only."""
