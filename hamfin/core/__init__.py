"""hamfin.core: the HML-D layer, its scans (reference, chunked, triton) and energy diagnostics.

Pure torch (+ optional triton). See ``../shared/HMLD.md`` for the equations.
"""

from hamfin.core.energy import EnergyTerms, energy_terms, shadow_energy, transition
from hamfin.core.hmld import HMLD, HMLDConfig
from hamfin.core.scan import scan, scan_chunked, scan_ref

__all__ = [
    "HMLD",
    "EnergyTerms",
    "HMLDConfig",
    "energy_terms",
    "scan",
    "scan_chunked",
    "scan_ref",
    "shadow_energy",
    "transition",
]
