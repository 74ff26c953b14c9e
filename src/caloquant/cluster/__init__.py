"""Scale-out: sharded simulation and generation on a Dask cluster (LocalCluster or any scheduler)."""

from caloquant.cluster.run import ShardedResult, connect, run_sharded
from caloquant.cluster.tasks import GenerateJob, SimulateJob

__all__ = ["GenerateJob", "ShardedResult", "SimulateJob", "connect", "run_sharded"]
