"""Where the payload code lived before it was split; kept for imports of its documented name.

:class:`~pgpubsub.codec.ChannelCodec` is in :mod:`pgpubsub.codec`, the wire
format in ``pgpubsub.wire`` and the model rows in ``pgpubsub.rows``.
"""

from __future__ import annotations

from .codec import ChannelCodec

__all__ = ["ChannelCodec"]
