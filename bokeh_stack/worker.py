"""The workers' command, `python -m bokeh_stack.worker ...` (the worker itself: bokeh_stack/daemons/worker.py), kept
at this path whatever moves inside the package: supervisord restarts a whole pool at once when its command line
changes, while a change in a pool's arguments file is rolled out one worker at a time (`apply`, `reload`)."""

import sys

from bokeh_stack.daemons.worker import main

if __name__ == "__main__":
    main(sys.argv[1:])
