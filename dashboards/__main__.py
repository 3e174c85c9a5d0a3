"""`python -m dashboards` = `gruwatch dashboard`."""

import sys

from dashboards.cli import main

sys.exit(main())
