"""``catalogd run``: the watching daemon.

Stages, one module each, plain data between them:

- :mod:`~catalogd.daemon.coalesce`: events per path become one piece of work, due after
  a quiet period (cut short by a close after writing); pure, with an injected clock;
- :mod:`~catalogd.daemon.readiness`: is the writer done (locks seen in /proc/locks,
  the HDF5 superblock's open-for-write flag, mtime age)? Never takes a lock;
- :mod:`~catalogd.daemon.pipeline`: one path: lstat, classify, policy, then store,
  extract, defer or delete;
- :mod:`~catalogd.daemon.extract`: extraction workers, each with its indexer process;
- :mod:`~catalogd.daemon.reconcile`: compare the disk with the store, both ways;
- :mod:`~catalogd.daemon.service`: the :class:`Daemon` that runs them.
"""

from __future__ import annotations

from catalogd.daemon.service import Daemon, DaemonStats

__all__ = ["Daemon", "DaemonStats"]
