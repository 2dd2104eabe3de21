"""Packs: written durably and combined, read raw for merges and fetches, streamed, bitmaps."""
