"""The step's output in ZenML's step log, also when the step could not put it there.

ZenML's own code inside the step sends what the step prints to the step's log, in
batches: a step that is OOM-killed or timed out loses what it printed last, and a
command step (no ZenML code in it) sends nothing. The runner keeps every byte of the
step's output in the run folder, so once the step ended the operator compares the two
and adds to the step's log the lines ZenML does not have — each line counted, so a line
ZenML already has is not added again, and one printed twice but stored once is.
"""

import collections
import logging
from typing import Any, Dict, Iterator, List, Mapping

from zenml.logger import get_logger

logger = get_logger(__name__)

#: The log ZenML's step code writes to (`StepRunner`'s logging context).
SOURCE = "step"
#: At most this many of the last lines of each of the step's logs are forwarded.
MAX_LINES = 5000
#: At most this many entries of ZenML's log are read to compare.
MAX_ENTRIES = 20000


def _tail(path: Any, limit: int) -> List[str]:
    """The last `limit` lines of a log file (a missing file has none)."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            lines = collections.deque(f, maxlen=limit)
    except OSError:
        return []
    return [raw.decode("utf-8", errors="replace").rstrip("\r\n") for raw in lines]


def _entries(log_store: Any, model: Any) -> Iterator[str]:
    """The messages already in ZenML's log, oldest first."""
    seen = 0
    after = None
    while seen < MAX_ENTRIES:
        page = log_store.fetch(model, start="oldest", after=after)
        for entry in page.items:
            seen += 1
            yield entry.message
        if not page.items or not page.after or page.after == after:
            return
        after = page.after


def missing_lines(have: List[str], printed: List[str]) -> List[str]:
    """The lines of `printed` that `have` lacks, in order, each counted."""
    counts: Dict[str, int] = collections.Counter(line.rstrip() for line in have)
    out = []
    for line in printed:
        key = line.rstrip()
        if not key.strip():
            continue
        if counts.get(key, 0) > 0:
            counts[key] -= 1
        else:
            out.append(line)
    return out


def forward(step_run_id: Any, result: Mapping[str, Any]) -> int:
    """Add to the step run's ZenML log what the step printed and the log lacks;
    returns how many lines were added."""
    from zenml.client import Client
    from zenml.utils.logging_utils import search_logs_by_source, setup_logging_context

    logs = result.get("logs") or {}
    printed = _tail(logs.get("stdout"), MAX_LINES) + _tail(logs.get("stderr"), MAX_LINES)
    if not printed:
        return 0
    client = Client()
    step_run = client.get_run_step(step_run_id)
    log_store = client.active_stack.log_store
    model = search_logs_by_source(step_run.log_collection or [], SOURCE)
    have: List[str] = []
    if model is not None and log_store is not None:
        try:
            have = list(_entries(log_store, model))
        except Exception as e:
            logger.debug("Cannot read the log of step `%s`: %s", step_run.name, e)
    missing = missing_lines(have, printed)
    if not missing:
        return 0
    pipeline_run = client.get_pipeline_run(step_run.pipeline_run_id)
    context = setup_logging_context(source=SOURCE, step_run=step_run, pipeline_run=pipeline_run)
    with context:
        for line in missing:
            context.emit(
                logging.LogRecord(
                    name="steprunner",
                    level=logging.INFO,
                    pathname="",
                    lineno=0,
                    msg=line,
                    args=(),
                    exc_info=None,
                )
            )
    return len(missing)
