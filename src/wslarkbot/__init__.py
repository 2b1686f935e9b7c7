"""wslarkbot: Feishu/Lark bots without a public URL.

The full public API is assembled here as the modules land; see README.md.
"""

from __future__ import annotations

__version__ = "1.0.0.dev0"
