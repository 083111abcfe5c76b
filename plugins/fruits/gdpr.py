"""GDPR guard: data and compute stay in EU member-state regions.

(Owned by the cluster/foundation issue: the guard functions land here.)
"""

from __future__ import annotations

# AWS regions located in EU member states. Deliberately NOT eu-west-2 (London, UK) nor
# eu-central-2 (Zurich, CH): outside the EU, even if "eu-" in name.
EU_MEMBER_STATE_REGIONS: tuple[str, ...] = (
    "eu-west-3",  # Paris
    "eu-west-1",  # Ireland
    "eu-central-1",  # Frankfurt
    "eu-north-1",  # Stockholm
    "eu-south-1",  # Milan
    "eu-south-2",  # Spain
)
