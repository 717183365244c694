"""`python -m doctorai.cli`: the `doctorai` command, run from this checkout."""

import sys

from doctorai.cli import main

sys.exit(main())
