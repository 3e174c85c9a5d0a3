"""`python -m trainer` runs `gruwatch train`."""

import sys

from trainer.cli import main

sys.exit(main())
