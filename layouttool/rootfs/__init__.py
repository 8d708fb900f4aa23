"""The filesystem side of layers: apply them to a directory, make them from one, and the
merged view of an image's layers.

One module per job:

* :mod:`~layouttool.rootfs.apply`: apply one uncompressed layer tar stream to a directory,
  exactly and safely (``layouttool unpack``).
* :mod:`~layouttool.rootfs.tarread`: read a layer tar stream forward once, with guarded
  headers.
* :mod:`~layouttool.rootfs.names`: where a member lands under the root; the whiteout names.
* :mod:`~layouttool.rootfs.write`: make layer tars (from a directory, a tar, a list of
  changes); :mod:`~layouttool.rootfs.ustar` the fast path for their headers.
* :mod:`~layouttool.rootfs.record`: what ``unpack`` left, beside the rootfs;
  :mod:`~layouttool.rootfs.scan`: a tree against its record (``repack``).
* :mod:`~layouttool.rootfs.merge`: the merged tree of an image's layers, as metadata, with
  apply's rules (its nodes in :mod:`~layouttool.rootfs.nodes`);
  :mod:`~layouttool.rootfs.merged_tar` writes it as one tar (``export``, ``flatten``),
  :mod:`~layouttool.rootfs.treediff` compares two (``diff``) and
  :mod:`~layouttool.rootfs.layerchanges` says what each layer did (``diff --layers``).

Nothing here touches the store, digests or decompression: callers hand in plain tar streams
and take plain tar streams out (a test holds this). The public names are re-exported here, so
``from layouttool.rootfs import apply_layer`` keeps working.
"""

from __future__ import annotations

from layouttool.rootfs.apply import ApplyOptions, ApplyStats, apply_layer

__all__ = ["ApplyOptions", "ApplyStats", "apply_layer"]
