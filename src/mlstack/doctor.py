"""Host checks the stacks need before they start, each returning a problem message or None."""

from __future__ import annotations

from pathlib import Path

MAX_MAP_COUNT_FILE = Path("/proc/sys/vm/max_map_count")
#: Elasticsearch (ClearML server) refuses to run with fewer memory map areas.
MIN_MAX_MAP_COUNT = 524288


def check_max_map_count(path: Path = MAX_MAP_COUNT_FILE, minimum: int = MIN_MAX_MAP_COUNT) -> str | None:
    """Why vm.max_map_count is too low for Elasticsearch, with the fix; None when it is enough."""
    fix = (
        f"run `sudo sysctl -w vm.max_map_count={minimum}` and, to keep it after reboot, "
        f"`echo 'vm.max_map_count={minimum}' | sudo tee /etc/sysctl.d/99-mlstack.conf`"
    )
    try:
        value = int(path.read_text().strip())
    except FileNotFoundError:
        return f"vm.max_map_count cannot be read ({path} does not exist; not Linux?): ensure it is >= {minimum}"
    except ValueError:
        return f"vm.max_map_count in {path} is not a number: {fix}"
    if value < minimum:
        return f"vm.max_map_count is {value}, Elasticsearch (ClearML) needs >= {minimum}: {fix}"
    return None
