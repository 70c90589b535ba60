"""``python -m proofs_checks``: run every check and write the report."""

import sys

from proofs_checks.cli import main

sys.exit(main())
