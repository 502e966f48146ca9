"""The demo's output folder: the only place on the server the page can make the app write or serve.

Every request gets its own new sub-folder with a fresh random name; files inside are named by the app
(never by the user), so no request can overwrite another's results or reach outside the folder.
"""

from __future__ import annotations

import datetime
import secrets
from pathlib import Path

from accel.render.folder import is_inside

__all__ = ["OutputFolder"]


class OutputFolder:
    """The app's output folder.

    Args:
        root: the folder (created if missing). Everything the app writes goes below it, and the
            server is told to serve files from it and nowhere else.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def new_request_dir(self, kind: str) -> Path:
        """A new, empty folder ``<root>/<kind>-<UTC time>-<random hex>`` for one request's files.

        Args:
            kind: a short lowercase word naming the request type (``"generate"``, ``"edit"``).

        Raises:
            ValueError: ``kind`` is not a short lowercase word.
        """
        if not (isinstance(kind, str) and kind.isalpha() and kind.islower() and len(kind) <= 16):
            raise ValueError(f"kind must be a short lowercase word like 'generate', got {kind!r}")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = self.root / f"{kind}-{stamp}-{secrets.token_hex(4)}"
        path.mkdir()
        return path

    def contains(self, path: str | Path) -> bool:
        """Whether ``path`` (after resolving links and ``..``) lies inside the output folder."""
        return is_inside(path, self.root)
