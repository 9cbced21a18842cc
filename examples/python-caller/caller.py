"""A Python workflow that offloads a heavy activity to fresh compute by running
`TriggerExternalWorkflow` as a child workflow, and gets the activity's result back.

The child provisions a unit of compute from the image named in its input, runs the named
activity there (`summarize_dataset` of examples/python-worker) with its arguments, deletes the
unit whatever happens, and returns its outcome: the activity's return value is
`outcome["job"]["result"]`. When the activity fails, the child fails with the activity's own
failure (type, message, details, non-retryable flag) as its cause. Cancelling this workflow
cancels the child, which deletes its compute before it ends.

    python caller.py worker               # hosts OffloadSummary on CALLER_TASK_QUEUE
    python caller.py run orders 1000      # runs it once and prints the summary as JSON

Settings (environment): the standard TEMPORAL_* connection variables, CALLER_TASK_QUEUE
(default `python-caller`), WORKFLOW_TASK_QUEUE (the workflow-worker's, `taskQueueName`),
IMAGE_REGISTRY, IMAGE_REPOSITORY, IMAGE_TAG (the Python worker's image).
"""

import asyncio
import json
import os
import signal
import sys
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker
from temporalio.workflow import ParentClosePolicy

CALLER_TASK_QUEUE = os.environ.get("CALLER_TASK_QUEUE", "python-caller")


@dataclass
class OffloadRequest:
    """What to summarize, and where the unit's worker image and the workflow-worker are."""

    dataset: str
    rows: int
    batch_size: int = 100
    seconds_per_batch: float = 0.1
    registry: str = "sje-test-registry"
    repository: str = "python-worker"
    tag: str = "latest"
    workflow_task_queue: str = "taskQueueName"
    # The unit's size (see docs/configuration.md, "Per-run resources").
    resources: dict = field(default_factory=lambda: {"cpu": 1, "memory": "512MiB"})


@workflow.defn(name="OffloadSummary")
class OffloadSummary:
    @workflow.run
    async def run(self, request: OffloadRequest) -> dict:
        outcome = await workflow.execute_child_workflow(
            "TriggerExternalWorkflow",
            {
                "registry": request.registry,
                "repository": request.repository,
                "tag": request.tag,
                "activity": "summarize_dataset",
                "activity_args": [
                    {"name": request.dataset, "rows": request.rows},
                    {
                        "batch_size": request.batch_size,
                        "seconds_per_batch": request.seconds_per_batch,
                    },
                ],
                # The activity takes where a lost unit left it as its last argument.
                "activity_resume": True,
                "resources": request.resources,
            },
            id=f"{workflow.info().workflow_id}-offload",
            task_queue=request.workflow_task_queue,
            # If this workflow closes first, the child is cancelled (and deletes its compute),
            # never terminated: a terminated run cannot clean up.
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            result_type=dict,
        )
        return outcome["job"]["result"]


async def connect() -> Client:
    return await Client.connect(**ClientConfig.load_client_connect_config())


async def serve() -> None:
    client = await connect()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(client, task_queue=CALLER_TASK_QUEUE, workflows=[OffloadSummary]):
        print(f"polling {CALLER_TASK_QUEUE}", flush=True)
        await stop.wait()


async def run_once(dataset: str, rows: int) -> None:
    client = await connect()
    request = OffloadRequest(
        dataset=dataset,
        rows=rows,
        registry=os.environ.get("IMAGE_REGISTRY", "sje-test-registry"),
        repository=os.environ.get("IMAGE_REPOSITORY", "python-worker"),
        tag=os.environ.get("IMAGE_TAG", "latest"),
        workflow_task_queue=os.environ.get("WORKFLOW_TASK_QUEUE", "taskQueueName"),
    )
    # This process hosts the workflow while it runs (`worker` does it for good).
    async with Worker(client, task_queue=CALLER_TASK_QUEUE, workflows=[OffloadSummary]):
        summary = await client.execute_workflow(
            OffloadSummary.run,
            request,
            id=f"offload-summary-{uuid.uuid4()}",
            task_queue=CALLER_TASK_QUEUE,
            execution_timeout=timedelta(hours=2),
        )
    print(json.dumps(summary))


def main() -> None:
    match sys.argv[1:]:
        case ["worker"]:
            asyncio.run(serve())
        case ["run", dataset, rows]:
            asyncio.run(run_once(dataset, int(rows)))
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main()
