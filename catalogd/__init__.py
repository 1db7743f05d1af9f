"""catalogd: catalogue and police a light source's /data tree."""

from __future__ import annotations

import gc

__version__ = "0.1.0"


class without_gc:  # noqa: N801  (used like a function: ``with without_gc():``)
    """The cyclic garbage collector paused for a block, and re-enabled after it when it
    was on before. For imports: they make many long-lived objects and no garbage, and
    the collections they set off cost ~7% of a command's start-up."""

    def __enter__(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self._was_enabled:
            gc.enable()
