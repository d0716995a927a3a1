"""RenderHub: self-hosted remote rendering, wire-compatible with Azure Remote Rendering's session API."""

__version__ = "0.1.0"
