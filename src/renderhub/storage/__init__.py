"""Blob storage as the conversion process uses it: inputs downloaded, outputs uploaded (no hub imports)."""
