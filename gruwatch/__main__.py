"""`python -m gruwatch` is the `gruwatch` command."""

from gruwatch.cli import main

raise SystemExit(main())
