"""``python -m resolutionflow_cli``: the same as the ``resolutionflow`` command."""

import sys

from resolutionflow_cli.main import main

sys.exit(main())
