"""Where the local runtime keeps things and what it deploys as: the repository root, the `.local` state folder,
the region and the API stage. They sit in a module of their own, importing nothing of the runtime, so that every
other module of the local runtime can share them without an import cycle.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
REGION = "us-east-1"
STAGE = "v1"
