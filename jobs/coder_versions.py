"""Which Coder releases the jobs support, and what differs between them. Pure.

The jobs were verified against a real coderd at v2.21 (BEHAVIOR.md §11) and written against
Coder's documentation up to v2.39 (README "Supported Coder versions" cites each source). A
coderd outside that range is still talked to, with a warning: most of the API has not changed.
What the newer releases change is summarised, with sources, in BEHAVIOR.md §12.
"""

from __future__ import annotations

import re

Release = tuple[int, int, int]

OLDEST: Release = (2, 21, 0)
NEWEST: Release = (2, 39, 0)  # the newest minor whose documentation the jobs were checked against
SUPPORTED_RANGE = "v2.21.x to v2.39.x"

# Templates carry `use_classic_parameter_flow` (BEHAVIOR.md §12.2) from the release that made dynamic parameters
# generally available (coder/coder PR #18636 and docs/admin/templates/extending-templates/
# parameters/compatibility-mode.md). An older coderd ignores the field (lenient JSON decoding,
# BEHAVIOR.md "Conventions"), but would report it missing every run: so it is not sent.
PARAMETER_FLOW_SINCE: Release = (2, 24, 0)

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse(version: str) -> Release | None:
    """`v2.21.0-devel+a8c2586` -> (2, 21, 0); None for what is not a release number."""
    match = _VERSION.match(version.strip())
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def outside_range(version: str) -> bool:
    """True when the version is known and outside the supported minors (patch releases inherit)."""
    release = parse(version)
    return release is not None and not (OLDEST[:2] <= release[:2] <= NEWEST[:2])


def knows_parameter_flow(version: str) -> bool:
    """Unknown versions (a dev build without a number) count as new: they come from main."""
    release = parse(version)
    return release is None or release >= PARAMETER_FLOW_SINCE
