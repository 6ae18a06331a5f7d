"""`python -m lmforge ...` = `lmforge ...`; what `torchrun -m lmforge` runs on every rank."""

from lmforge.cli import main

raise SystemExit(main())
