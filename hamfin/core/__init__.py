"""hamfin.core: the HML-D layer, its scans (reference, chunked, triton) and energy diagnostics.

Pure torch (+ optional triton). See ``../shared/HMLD.md`` for the equations.
"""

from hamfin.core.scan import scan, scan_chunked, scan_ref

__all__ = ["scan", "scan_chunked", "scan_ref"]
