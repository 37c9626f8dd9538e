"""Wait until the backend store accepts a login, then exit 0 (1 after the deadline or on a refusal).

The compose stack's `migrate` one-shot runs it before `mlflow db upgrade`, which tries once: a
PostgreSQL that restarts, or answers on its socket before TCP, would fail the start otherwise.

    python -m mlstack_mlflow_store.wait_for_database [--wait SECONDS]   # MLFLOW_BACKEND_STORE_URI, PGPASSWORD
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import psycopg

#: PostgreSQL refusing who we are, not a server still starting: waiting would not help.
_REFUSALS = ("password authentication failed", "no pg_hba.conf entry", "does not exist")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to keep trying (default 120)")
    deadline = time.monotonic() + parser.parse_args().wait
    uri = os.environ["MLFLOW_BACKEND_STORE_URI"].replace("postgresql+psycopg://", "postgresql://", 1)
    told, pause = False, 0.1
    while True:
        try:
            psycopg.connect(uri, connect_timeout=5).close()
            return 0
        except psycopg.OperationalError as error:
            if any(refusal in str(error) for refusal in _REFUSALS) or time.monotonic() > deadline:
                print(f"the backend store refuses or does not answer: {error}", file=sys.stderr)
                return 1
            if not told:
                print(f"waiting for the backend store to accept a login ({str(error).strip()})", flush=True)
                told = True
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


if __name__ == "__main__":
    sys.exit(main())
