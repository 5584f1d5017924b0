"""Token extraction and model selection on a Dask cluster (``pip install 'skprobe[dask]'``).

:func:`extract` splits a list of audio files into chunks that the workers of a
Dask cluster (a ``LocalCluster``, SLURM or PBS workers from ``dask-jobqueue``,
Kubernetes pods) extract into one shared token store; it returns the same
store-backed tokens as the single-machine transformer. For model selection,
pass those tokens to ``GridSearchCV`` inside ``joblib.parallel_backend("dask")``:
their pickle holds only the store's description and the clip keys, so each
worker reads its folds from the store instead of receiving token arrays
through the scheduler.
"""

from ._client import ClusterSetupError, cluster_client
from ._extract import ExtractionReport, extract, list_audio_files

__all__ = ["ClusterSetupError", "ExtractionReport", "cluster_client", "extract", "list_audio_files"]
