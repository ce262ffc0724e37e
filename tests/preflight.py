"""Before the tests: make sure a PostgreSQL can be had, or say in one line what to install."""

from __future__ import annotations

import asyncio
import sys

from tests.pg import INSTALL_HINT, admin_url, answers, pg_bin_dir

if __name__ == "__main__":
    if not asyncio.run(answers(admin_url())) and pg_bin_dir() is None:
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(1)
