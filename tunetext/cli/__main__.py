"""`python -m tunetext.cli ...`, as `accelerate launch -m tunetext.cli train ...` runs it."""

import sys

from tunetext.cli import main

sys.exit(main())
