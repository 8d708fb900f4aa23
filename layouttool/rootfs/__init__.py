"""The filesystem side of layers: apply them to a directory, and (to come) make them from one.

One module per job:

* :mod:`~layouttool.rootfs.apply`: apply one uncompressed layer tar stream to a directory,
  exactly and safely (``layouttool unpack``).
* :mod:`~layouttool.rootfs.tarread`: read a layer tar stream forward once, with guarded
  headers.
* :mod:`~layouttool.rootfs.names`: where a member lands under the root; the whiteout names.

Nothing here touches the store, digests or decompression: callers hand in plain tar streams
and take plain tar streams out (a test holds this). The public names are re-exported here, so
``from layouttool.rootfs import apply_layer`` keeps working.
"""

from __future__ import annotations

from layouttool.rootfs.apply import ApplyOptions, ApplyStats, apply_layer

__all__ = ["ApplyOptions", "ApplyStats", "apply_layer"]
