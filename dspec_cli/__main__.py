import sys

from dspec_cli.main import main

sys.exit(main())
