"""The request guard's limits, read from the server's environment (.env in both runtimes), and the
refusal every check raises."""

from __future__ import annotations

import os

MiB = 1024 * 1024
#: name -> default; each read from the server's environment (.env in both runtimes)
LIMITS = {
    "MLSTACK_MAX_REQUEST_BYTES": 16 * MiB,
    "MLSTACK_MAX_GRAPHQL_BYTES": 1 * MiB,
    "MLSTACK_MAX_ARTIFACT_BYTES": 10 * 1024 * MiB,
    "MLSTACK_MAX_FILTER_LENGTH": 65536,
    "MLSTACK_MAX_PAGE_SIZE": 50000,
}
MAX_JSON_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def limit(name: str) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else LIMITS[name]
