"""`python -m qkvgui` runs the same command line as `qkvgui`."""

import sys

from qkvgui.cli import main

sys.exit(main())
