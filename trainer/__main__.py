"""`python -m trainer` runs `gruwatch train` (also under torchrun: `torchrun --nproc-per-node N -m trainer`)."""

import sys

from trainer.cli import main

sys.exit(main())
