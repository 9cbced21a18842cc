"""An activity worker in Python, for a unit of compute of `TriggerExternalWorkflow`.

It is all a unit needs: it polls the queue in `EXTERNAL_TASK_QUEUE` (unique to the run) and
connects with the Temporal settings the workflow-worker gives it as the SDKs' standard
environment variables (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`,
`TEMPORAL_TLS*`, ...). It runs one activity, `summarize_dataset`, which takes two typed
arguments, heartbeats its progress and returns a typed result. It resumes where it left off:
from its last heartbeat when Temporal retries it on the same unit, and from the lost unit's
last heartbeat (its third argument, which runs give with `activity_resume`) on a fresh unit.
SIGTERM (the unit's deletion, a node drain) stops it gracefully: the activity then fails as
`WorkerShutdown` with its progress, so the run resumes it on fresh compute.

Run a run with it (its image built from the Dockerfile beside this file, or, with the local
provider, `LOCAL_WORKER_COMMAND="python3 examples/python-worker/worker.py"`):

    starter --activity summarize_dataset --activity-resume \\
        --arg '{"name": "orders", "rows": 1000}' --arg '{"batch_size": 100}'
"""

import asyncio
import hashlib
import json
import logging
import os
import signal
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

from temporalio import activity
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker


@dataclass
class Dataset:
    """The first argument: what to summarize."""

    name: str
    rows: int


@dataclass
class Options:
    """The second argument: how."""

    batch_size: int = 100
    # Pause per batch, standing for the real work.
    seconds_per_batch: float = 0.1


@dataclass
class Summary:
    """The result: the run's `job.result`."""

    dataset: str
    rows: int
    batches: int
    checksum: str
    worker: str
    # The batch this attempt started at: 0, or where it resumed.
    started_at_batch: int = 0


@activity.defn(name="summarize_dataset")
async def summarize_dataset(
    dataset: Dataset, options: Options, resume: Optional[dict]
) -> Summary:
    """Reads `dataset` in batches, heartbeating after each one.

    `resume` is where a lost unit left it: the run's `activity_resume` adds it as the last
    argument, the last heartbeat detail the lost unit recorded (`None` on the first unit). It
    has no default on purpose: the Python SDK decodes typed arguments (the dataclasses) only
    when a task brings as many arguments as the function has parameters.
    """
    if dataset.rows < 0:
        # The input cannot work: retrying (here or on fresh compute) would fail the same way.
        raise ApplicationError(
            f"dataset {dataset.name} has a negative row count",
            {"rows": dataset.rows},
            type="InvalidDataset",
            non_retryable=True,
        )
    if options.batch_size <= 0:
        raise ApplicationError(
            "batch_size must be positive", type="InvalidOptions", non_retryable=True
        )
    batches = -(-dataset.rows // options.batch_size)
    # A retry on the same unit resumes after the last batch its predecessor reported; the
    # first attempt on a fresh unit, after the last batch the lost unit reported.
    details = activity.info().heartbeat_details
    last = details[0] if details else resume
    start = int(last["batch"]) if last else 0
    # The checksum covers every batch, including those a lost unit read.
    digest = hashlib.sha256(dataset.name.encode())
    for batch in range(start):
        digest.update(batch.to_bytes(8, "big"))
    for batch in range(start, batches):
        if activity.is_worker_shutdown():
            # The unit is being stopped: fail retryably with the progress, for fresh compute.
            raise ApplicationError(
                "the worker is shutting down",
                {"batch": batch, "of": batches},
                type="WorkerShutdown",
            )
        await asyncio.sleep(options.seconds_per_batch)
        digest.update(batch.to_bytes(8, "big"))
        activity.heartbeat({"batch": batch + 1, "of": batches})
    return Summary(
        dataset=dataset.name,
        rows=dataset.rows,
        batches=batches,
        checksum=digest.hexdigest()[:16],
        worker=socket.gethostname(),
        started_at_batch=start,
    )


def take_secrets_file() -> None:
    """Secrets delivered in a file (the Docker provider's default: a container's environment
    shows in `docker inspect`) move into the environment; the file and its directory go."""
    path = os.environ.pop("TEA_SECRETS_FILE", "")
    if not path:
        return
    try:
        with open(path, encoding="utf-8") as file:
            os.environ.update(json.load(file))
    finally:
        os.remove(path)
        try:
            os.rmdir(os.path.dirname(path))  # only when empty
        except OSError:
            pass


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    take_secrets_file()
    task_queue = os.environ["EXTERNAL_TASK_QUEUE"]
    # On compute the connection comes from the environment only, never from a profile file.
    env_only = os.environ.get("TEA_TEMPORAL_ENV_ONLY") == "true"
    connect = ClientConfig.load_client_connect_config(disable_file=env_only)
    client = await Client.connect(**connect)
    worker = Worker(
        client,
        task_queue=task_queue,
        activities=[summarize_dataset],
        graceful_shutdown_timeout=timedelta(seconds=5),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.info("polling %s", task_queue)
    async with worker:
        await stop.wait()
    logging.info("stopped")


if __name__ == "__main__":
    asyncio.run(main())
