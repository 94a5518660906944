import sys

from bokeh_stack.cli import main

sys.exit(main())
