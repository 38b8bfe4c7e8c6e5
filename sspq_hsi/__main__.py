"""`python -m sspq_hsi ...`: the `sspq-hsi` command without installing it."""

import sys

from sspq_hsi.main import main

sys.exit(main())
