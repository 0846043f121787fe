"""``python -m resilience``: see ``resilience._cli``."""

import sys

from resilience._cli import main


sys.exit(main())
