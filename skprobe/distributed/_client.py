"""Connecting to a Dask cluster: an existing client, a scheduler address, or a LocalCluster of N workers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ClusterSetupError", "cluster_client"]


class ClusterSetupError(ValueError):
    """The cluster cannot run the job: scheduler unreachable, a worker lacking a file or write access.

    The message names the scheduler address or the worker and the path at fault.
    """


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "skprobe.distributed needs Dask's distributed scheduler: pip install 'skprobe[dask]'"
        ) from exc
    return distributed


@contextmanager
def cluster_client(client=None, *, n_workers: int | None = None, connect_timeout: float = 10.0,
                   threads_per_worker: int = 1) -> Iterator[object]:
    """A ``distributed.Client`` for the job, closed afterwards if this function opened it.

    Parameters
    ----------
    client : distributed.Client, str or None
        A client to use as is, a scheduler address such as ``"tcp://host:8786"``, or None: the
        current default client (one made by ``Client(...)`` earlier in the session), or a new
        ``LocalCluster`` when ``n_workers`` is given.
    n_workers : int, optional
        Start a ``LocalCluster`` of this many worker processes (one thread each) for the job. Its
        scheduler, nannies and workers log only critical messages (a failed task reaches the caller
        as the job's exception, which names the worker, the chunk and the file; the workers' own
        tracebacks and the nannies' shutdown warnings would repeat it on stderr), and its HTTP
        server takes a free port (no warning when Dask's usual 8787 is taken).
    connect_timeout : float, default=10
        Seconds to wait for a scheduler given by address.
    threads_per_worker : int, default=1
        Threads of each LocalCluster worker (one: torch parallelises inside a forward pass).

    Raises
    ------
    ClusterSetupError
        The scheduler is unreachable, or neither a client nor ``n_workers`` was given and no
        default client exists.
    """
    distributed = _import_distributed()
    if client is not None and n_workers is not None:
        raise ValueError("pass either client (a Client or a scheduler address) or n_workers, not both")
    if client is not None and not isinstance(client, str):
        yield client
        return
    if isinstance(client, str):
        try:
            opened = distributed.Client(client, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ClusterSetupError(
                f"could not reach the Dask scheduler at {client} within {connect_timeout:g} s "
                f"({type(exc).__name__}); is `dask scheduler` running there and the port open?"
            ) from exc
        with opened:
            yield opened
        return
    if n_workers is not None:
        if int(n_workers) < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        with distributed.LocalCluster(n_workers=int(n_workers), processes=True,
                                      threads_per_worker=threads_per_worker, dashboard_address=None,
                                      scheduler_kwargs={"dashboard_address": ":0"},
                                      silence_logs=logging.CRITICAL) as cluster:
            with distributed.Client(cluster) as opened:
                yield opened
        return
    try:
        default = distributed.get_client()
    except ValueError as exc:
        raise ClusterSetupError(
            "no Dask client: pass client=Client(...) or a scheduler address such as 'tcp://host:8786', "
            "or n_workers=N to start a LocalCluster"
        ) from exc
    yield default
