"""Steering sites, as the hook sees them: the data lives in `hsteer.model.sites` (a site is a fact about the
model's structure); this module keeps the names the steering layer has always imported from here.
"""

from __future__ import annotations

from hsteer.model.sites import MID_BLOCK, SteeringSite, base_module, site_for

__all__ = ["MID_BLOCK", "SteeringSite", "base_module", "site_for"]
