"""`python -m vaekit` (and `torchrun -m vaekit`) run the command-line interface."""

from .cli import main

raise SystemExit(main())
