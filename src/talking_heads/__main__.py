"""`python -m talking_heads ...` is the `talking-heads` command."""

import sys

from .cli import main

sys.exit(main())
