"""`python -m trainer` runs `gruwatch train` (also under torchrun: `torchrun --nproc-per-node N -m trainer`)."""

import sys

from gruwatch.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
