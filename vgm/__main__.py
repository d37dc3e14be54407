"""`python -m vgm ...` (and `torchrun -m vgm ...`): the same as the `vgm` command."""
import sys

from .cli import main

sys.exit(main())
